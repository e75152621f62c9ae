"""Everything about images on disk: discovery, reading, transforms, caching, synthetic federations."""
