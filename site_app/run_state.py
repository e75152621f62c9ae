"""What a site keeps between the rounds of one run, in its work folder: <work>/runs/<run key>/.

The run key is derived from the coordinator's run folder (`run-dir`, the same for every round of a run and for a
resumed run) and falls back to Flower's run id. The site's own normalization layers (local-norm) and its
local-only baseline model live there; nothing in it is ever sent.
"""

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch

RUNS_FOLDER = "runs"


def run_state_dir(work: Path, run_config: Mapping[str, object], run_id: int) -> Path:
    """<work>/runs/<key>: key = first 16 hex digits of SHA-256 of the run folder path, else `run-<run id>`."""
    run_dir = str(run_config.get("run-dir", ""))
    key = hashlib.sha256(run_dir.encode("utf-8")).hexdigest()[:16] if run_dir else f"run-{run_id}"
    return work / RUNS_FOLDER / key


def load_state(path: Path) -> dict[str, object] | None:
    """A file written by save_state, or None when there is none."""
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def save_state(path: Path, payload: dict[str, object]) -> None:
    """torch.save through a temporary file in the same folder, then rename (loadable with weights_only=True)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(payload, tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
