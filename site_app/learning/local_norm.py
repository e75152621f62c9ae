"""Site-local normalization (run config `local-norm`, FedBN-style): the norm layers never leave the site.

Each norm layer's scale and shift are the site's own: they are left out of every train reply, kept in the run's
state folder (site_app.learning.run_state) after training, and put into each incoming global model before training and
before validation, so validation measures this site's personalized model (shared weights + its own norm).
Before the site's first training round they are the model's initial values (scale 1, shift 0), the same at
every site.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from flwr.app import ArrayRecord

from models.norm_layers import norm_state_names
from models.weights import load_record
from site_app.learning.run_state import load_state, save_state

NORM_FILE = "local-norm.pt"


@dataclass(frozen=True)
class LocalNorm:
    """`enabled` False: every weight is shared and this is a plain load/export."""

    enabled: bool
    state_dir: Path

    @property
    def path(self) -> Path:
        return self.state_dir / NORM_FILE

    def personalize(self, model: torch.nn.Module, incoming: ArrayRecord) -> None:
        """Load the global weights into `model`; with local-norm, then this site's norm layers."""
        if not self.enabled:
            load_record(model, incoming)
            return
        names = norm_state_names(model)
        sent = sorted(names & set(incoming.keys()))
        if sent:
            raise ValueError(f"local-norm is on but the global model carries norm layers: {sent[:3]}")
        load_record(model, incoming, keep=names)
        saved = load_state(self.path)
        if saved is not None:
            norm = saved["state_dict"]
            if set(norm) != names:
                raise ValueError(
                    f"{self.path} does not hold this model's norm layers (another model preset?)"
                )
            model.load_state_dict(norm, strict=False)

    def keep(self, model: torch.nn.Module, server_round: int) -> None:
        """Store this site's norm layers after training (no-op without local-norm)."""
        if self.enabled:
            names = norm_state_names(model)
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}
            save_state(self.path, {"state_dict": state, "meta": {"round": server_round}})

    def outgoing(self, model: torch.nn.Module) -> ArrayRecord:
        """The weights this site sends: all of them, or all but the norm layers."""
        local = norm_state_names(model) if self.enabled else frozenset()
        return ArrayRecord({k: v.detach().cpu() for k, v in model.state_dict().items() if k not in local})
