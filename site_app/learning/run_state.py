"""What a site keeps between the rounds of one run, in its work folder: <work>/runs/<run key>/.

The run key comes from the coordinator in every train and evaluate instruction (models.shared.wire.RUN_KEY: derived
from its run folder, so the same for every round of a run and for a resumed run); a coordinator that sends none
(an older one) gets Flower's run id instead. The key names a folder, so anything but RUN_KEY_PATTERN is refused.
The site's own normalization layers (local-norm) and its local-only baseline model live there; nothing in it is
ever sent.
"""

import re
from pathlib import Path

import torch

from models.shared.atomic import atomic_path
from models.shared.wire import RUN_KEY_PATTERN

RUNS_FOLDER = "runs"


def run_state_dir(work: Path, run_key: object, run_id: int) -> Path:
    """<work>/runs/<run key>, or <work>/runs/run-<run id> when the instruction carried no key."""
    if run_key is None:
        return work / RUNS_FOLDER / f"run-{int(run_id)}"
    if not isinstance(run_key, str) or not re.fullmatch(RUN_KEY_PATTERN, run_key):
        raise ValueError(
            f"the coordinator's run key {run_key!r} is not {RUN_KEY_PATTERN} (it names a folder of this site's"
            " work folder); the coordinator runs another version of the app"
        )
    return work / RUNS_FOLDER / run_key


def load_state(path: Path) -> dict[str, object] | None:
    """A file written by save_state, or None when there is none."""
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def save_state(path: Path, payload: dict[str, object]) -> None:
    """torch.save atomically (models.shared.atomic; loadable with weights_only=True)."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
