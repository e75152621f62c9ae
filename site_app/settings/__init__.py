"""The site's own settings, in one home: site.toml, Flower's node config, the limits on the coordinator's settings, the site secret, and the run settings as a site reads them."""
