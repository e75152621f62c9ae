"""A hospital's site: the Flower ClientApp, local training and validation, and what may leave the site."""
