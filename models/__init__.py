"""The leaf package every other package may import (it imports none of them).

It holds what the sides must agree on: the wire contract (wire), the label convention and evaluation regions
(labels), the registry of run settings (run_config), the network presets and weight exchange (presets,
weights), and the shared file and exit helpers (atomic, exit_codes).
"""
