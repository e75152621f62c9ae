"""What both sides share and import: the wire contract, the run-setting registry, labels, exit codes, atomic writes."""
