"""The run folder: config.json, metrics.jsonl (one object per site per round), summary.json, models/, report.

A metrics.jsonl record: {"round", "site", "status", "min_report_cases", "n_cases", "metrics", "conventions",
"train", "bytes", "privacy"}; a suppressed site's has n_cases null and no metrics. "bytes": the site's messages of
the round per direction (server_app.traffic); "privacy": ε and δ spent so far with central DP, else null.

Every file is written atomically (temp file + rename) or, for metrics.jsonl, appended a whole line at a
time and fsynced, so an interrupted run leaves readable files.
"""

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord

from models.weights import save_checkpoint

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"
REPORTED, SUPPRESSED = "reported", "suppressed"
"""The `status` of a metrics.jsonl record: the site sent aggregates, or had too few cases to send any."""


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temp file in the same folder, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: object) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


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
        write_json_atomic(path / CONFIG_FILE, {"run_config": dict(run_config), "software": _versions()})
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

    def write_summary(self, summary: dict) -> None:
        write_json_atomic(self.path / SUMMARY_FILE, summary)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("oncofed", "flwr", "torch", "monai", "numpy")}
