"""The coordinator's Grid wrappers: what every message pushed and every reply pulled passes through (bytes
metered, weights packed), and the forwarding base they share."""
