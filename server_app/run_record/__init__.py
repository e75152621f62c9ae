"""The run folder the coordinator writes: config, per-site records, checkpoints, the best model, the summary."""
