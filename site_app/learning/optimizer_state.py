"""Adam's moment estimates, kept at the site from one round of a run to the next, one file per random stream.

A new Adam divides each step by the root mean square of the gradients it has seen so far: its first steps are
sign steps of the whole learning rate on every weight, and its step size follows the current round's gradients
however small they have become. Made new every round, it starts every round with a burst that moves each site's
model further than the round's gradients warrant, and the averaged model swings from round to round. Kept, its
second moments remember the run's gradient scale, so later rounds take the smaller steps the gradients call for.
The first moments are set to zero at each round's start: they point where this site's own model was heading
before the averaging, and carried over they would push every round's start back towards the site's own optimum
(client drift); from zero, with the step count kept, a round's first steps are a tenth of the full step and grow
as the new round's gradients accumulate.

Files: <state dir>/adam-<stream>-<round>.pt (site_app.learning.run_state), the optimizer's state_dict after that
round's training. Round r starts from the file of the latest round before r, never from one of round r or later:
a round trained again after a stop (`simulate --resume`) starts as it did the first time. Older files are
removed. The moments follow this site's own weights, are never sent, and are stale by one aggregation: what they
carry is a scale per weight, which averaging changes little.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from site_app.learning.run_state import load_state, save_state

HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "amsgrad")
"""Taken from this round's new optimizer, never from the saved state: the run's settings may differ."""


@dataclass(frozen=True)
class AdamState:
    """Where stream ``stream`` of a run keeps its optimizer state, and the round about to train."""

    state_dir: Path
    stream: str
    server_round: int

    def path(self, server_round: int) -> Path:
        return self.state_dir / f"adam-{self.stream}-{server_round}.pt"

    def load(self, optimizer: torch.optim.Optimizer) -> bool:
        """Put the latest earlier round's moments into ``optimizer`` (built for the same model); False if none."""
        earlier = [r for r in self._saved_rounds() if r < self.server_round]
        if not earlier:
            return False
        saved = load_state(self.path(max(earlier)))
        fresh = [{k: group[k] for k in HYPERPARAMETERS if k in group} for group in optimizer.param_groups]
        optimizer.load_state_dict(saved["optimizer"])  # type: ignore[index, arg-type]
        for group, settings in zip(optimizer.param_groups, fresh, strict=True):
            group.update(settings)
        for state in optimizer.state.values():
            if "exp_avg" in state:
                state["exp_avg"].zero_()  # the direction this site's own model was heading: not the new one's
        return True

    def save(self, optimizer: torch.optim.Optimizer) -> None:
        """Keep ``optimizer``'s state as this round's; remove the files of rounds before the one loaded from."""
        save_state(self.path(self.server_round), {"optimizer": optimizer.state_dict()})
        earlier = [r for r in self._saved_rounds() if r < self.server_round]
        for old in earlier[:-1]:
            self.path(old).unlink(missing_ok=True)

    def _saved_rounds(self) -> list[int]:
        pattern = re.compile(rf"adam-{re.escape(self.stream)}-(\d+)\.pt")
        found = (pattern.fullmatch(p.name) for p in self.state_dir.glob(f"adam-{self.stream}-*.pt"))
        return sorted(int(m.group(1)) for m in found if m)
