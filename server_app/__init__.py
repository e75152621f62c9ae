"""The coordinator's ServerApp: strategy, per-site records, checkpoints and reports. Never sees an image."""
