"""Runs the whole federation on one machine in Flower's Simulation Engine (`oncofed simulate`, the benchmarks)."""
