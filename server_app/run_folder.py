"""The run folder: config.json, metrics.jsonl (one object per site per round), summary.json, models/, report.

A metrics.jsonl record: {"round", "site", "status", "reason", "withheld", "min_report_cases", "n_cases",
"metrics", "conventions", "train", "bytes", "privacy"}; `status` is one of models.wire.EVALUATE_STATUSES: a
suppressed or refused site's record has n_cases null, no metrics and the site's reason; "withheld" lists what the
site's disclosure policy left out of a reported round (e.g. medians below its min-position-cases); "train" holds
the site's training metrics, or its status (models.wire.TRAINING_STATUSES) and reason when it declined or refused
to train; "bytes": the site's messages of the round per direction (server_app.traffic); "privacy": ε and δ spent
so far with central DP, else null.

Every file is written atomically (temp file + rename) or, for metrics.jsonl, appended a whole line at a
time and fsynced, so an interrupted run leaves readable files.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from flwr.app import ArrayRecord

from models.atomic import atomic_path, atomic_write_json
from models.weights import save_checkpoint

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"
STRATEGY_STATE_FILE = Path("state") / "strategy.pt"
"""Not under models/: it holds no model (the model card and `export` read models/*.pt)."""


def read_json(path: Path) -> dict:
    """A JSON file of the run folder, or {} when the run did not get to write it."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_metrics(run_dir: Path) -> list[dict]:
    """All records of metrics.jsonl, in the order they were written."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @classmethod
    def create(cls, path: Path, run_config: dict) -> "RunFolder":
        """Start a run folder; an existing run's metrics are never appended to or overwritten."""
        if (path / METRICS_FILE).exists():
            raise FileExistsError(
                f"{path} already holds a run ({METRICS_FILE} exists); choose another run folder"
            )
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path / CONFIG_FILE, {"run_config": dict(run_config), "software": _versions()})
        return cls(path)

    def append_metrics(self, record: dict) -> None:
        with open(self.path / METRICS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def save_model(self, name: str, arrays: ArrayRecord, meta: dict[str, object]) -> Path:
        target = self.path / "models" / f"{name}.pt"
        save_checkpoint(arrays, target, meta)
        return target

    def save_strategy_state(self, state: dict[str, object]) -> Path:
        """The strategy's state after a round (server optimizer moments, privacy ledger), beside the round's
        checkpoint, for a resumed run (server_app.strategies: `load_state_dict`); torch.load(weights_only=True)."""
        target = self.path / STRATEGY_STATE_FILE
        with atomic_path(target) as tmp:
            torch.save(state, tmp)
        return target

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.path / SUMMARY_FILE, summary)

    @property
    def key(self) -> str:
        """The run key the sites file their run state under (models.wire.RUN_KEY): the first 16 hex digits of
        the SHA-256 of this folder's absolute path, so a resumed run in the same folder has the same key."""
        return hashlib.sha256(str(self.path.resolve()).encode("utf-8")).hexdigest()[:16]


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("oncofed", "flwr", "torch", "monai", "numpy")}
