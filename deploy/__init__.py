"""Provisioning, kits and launching Flower's own processes (superlink, supernode, flwr run)."""
