"""The run folder: config.json, metrics.jsonl (one object per site per round), rounds.jsonl (one object per
round), summary.json, models/, state/checkpoint.pt, report.

A metrics.jsonl record: {"round", "site", "status", "reason", "participation", "withheld", "min_report_cases",
"n_cases", "metrics", "conventions", "outside_limit", "train"}, one per site of the federation per round
(server_app.rounds.participation); "site" is the name the site's key is registered under (simulation: the name of
its data folder).
`status` is the site's validation status (models.shared.wire.EVALUATE_STATUSES) when its evaluate reply arrived — a
suppressed or refused site's record has n_cases null, no metrics and the site's reason — else why it did not:
models.shared.wire.ABSENT_STATUSES (offline, timeout, failed, dropped) with `reason` naming the phase and what happened.
"participation" holds each phase's outcome; "withheld" lists what the site's disclosure policy left out of a
reported round (e.g. medians below its min-position-cases); "train" holds the site's training metrics, or its
status (models.shared.wire.TRAINING_STATUSES) and reason when it declined or refused to train; "outside_limit" (and
"train"'s, for a refused training): the setting and limit a refusing site named (models.shared.wire.OutsideLimit),
else null; "bytes": the site's
messages of the round per direction (server_app.grid.traffic); "privacy": ε and δ spent so far with central DP, else
null. A rounds.jsonl record says
who was asked, whose training was used, and whether the global model changed (and if not, why).

refusals.jsonl: one record per message a site refused because it has not approved the run's app
(models.shared.wire.APP_NOT_APPROVED_CODE): {"round", "message_type", "site", "node_id", "fab_sha256", "reason"}, the
site being the refusing node's registered name and fab_sha256 the run's app; absent when none did.

Every file is written atomically (temp file + rename) or, for metrics.jsonl, appended a whole line at a
time and fsynced, so an interrupted run leaves readable files.
"""

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord

from models.shared.atomic import atomic_write_json
from models.weights import save_checkpoint

METRICS_FILE = "metrics.jsonl"
ROUNDS_FILE = "rounds.jsonl"
SUMMARY_FILE = "summary.json"
CROSS_SITE_FILE = "cross_site.json"
"""The cross-site generalization matrix's cells (server_app.rounds.cross_site), for the report."""
CONFIG_FILE = "config.json"
REFUSALS_FILE = "refusals.jsonl"

RUNNING, COMPLETED, STOPPED, FAILED = "running", "completed", "stopped", "failed"
"""summary.json `status` of a run: its ServerApp is at work, finished all rounds, stopped early (no quorum, or
the coordinator shut down; resumable), or ended on an error."""


def read_json(path: Path) -> dict:
    """A JSON file of the run folder, or {} when the run did not get to write it."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_metrics(run_dir: Path) -> list[dict]:
    """All records of metrics.jsonl, in the order they were written."""
    return _read_jsonl(run_dir / METRICS_FILE)


def read_rounds(run_dir: Path) -> list[dict]:
    """All records of rounds.jsonl (absent in runs from before it existed)."""
    return _read_jsonl(run_dir / ROUNDS_FILE)


def _read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file; a last line cut short (the writer died mid-line) is left out."""
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = [json.loads(line) for line in lines[:-1]]
    try:
        records += [json.loads(line) for line in lines[-1:]]
    except json.JSONDecodeError:
        if path.read_bytes().endswith(b"\n"):
            raise
    return records


def read_refusals(run_dir: Path) -> list[dict]:
    """All records of refusals.jsonl (sites that have not approved the run's app), in order."""
    path = run_dir / REFUSALS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _append_line(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


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
        _append_line(self.path / METRICS_FILE, record)

    def append_refusal(self, record: dict) -> None:
        _append_line(self.path / REFUSALS_FILE, record)

    def append_round(self, record: dict) -> None:
        _append_line(self.path / ROUNDS_FILE, record)

    def save_model(self, name: str, arrays: ArrayRecord, meta: dict[str, object]) -> Path:
        target = self.path / "models" / f"{name}.pt"
        save_checkpoint(arrays, target, meta)
        return target

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.path / SUMMARY_FILE, summary)

    @property
    def key(self) -> str:
        """The run key the sites file their run state under (models.shared.wire.RUN_KEY): the first 16 hex digits of
        the SHA-256 of this folder's absolute path, so a resumed run in the same folder has the same key."""
        return hashlib.sha256(str(self.path.resolve()).encode("utf-8")).hexdigest()[:16]


def _append_line(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("oncofed", "flwr", "torch", "monai", "numpy")}


def stop_explanation(summary: Mapping[str, object]) -> tuple[str, int | None] | None:
    """For a summary.json of a run that stopped early or failed: what happened, in one sentence, and the last
    round whose results are complete (None: not even round 0, so there is nothing to resume); None for a run
    that completed or is still running."""
    if summary.get("status") not in (STOPPED, FAILED):
        return None
    stopped = summary.get("stopped") or {}
    after = stopped.get("after_round")
    when = "before its first round" if after is None else f"after round {after}"
    return f"the run {summary['status']} {when}: {stopped.get('reason')}", after
