"""The model side of a site's round: its cases, local training, validation and the site-local state between rounds."""
