"""Continuing a run in its own folder, from its round checkpoint (server_app.rounds.round_checkpoint), or starting one
from a saved global model.

On resume the records of any round after the checkpoint (a round that was under way when the coordinator died)
are moved out of metrics.jsonl and rounds.jsonl into logs/discarded-on-resume.jsonl, so every round appears
exactly once per site when the run is done.
"""

import json
from datetime import UTC, datetime
from pathlib import Path

import torch
from flwr.app import ArrayRecord

from models.shared.atomic import atomic_write_json, atomic_write_text
from models.weights import load_saved_model
from server_app.rounds.reply_checks import model_spec
from server_app.rounds.round_checkpoint import CheckpointError, RoundState, load_round_state
from server_app.run_record.run_folder import (
    CONFIG_FILE,
    METRICS_FILE,
    ROUNDS_FILE,
    RunFolder,
    read_json,
)

DISCARDED_FILE = Path("logs") / "discarded-on-resume.jsonl"


def resume_run(run_dir: Path, model_preset: str, num_rounds: int) -> tuple[RunFolder, RoundState]:
    """The run folder and its checkpoint, checked against this run's settings and cut back to the checkpoint."""
    if not (run_dir / CONFIG_FILE).is_file():
        raise CheckpointError(f"{run_dir} is not a run folder (no {CONFIG_FILE}); nothing to resume")
    state = load_round_state(run_dir)
    if state.model_preset != model_preset:
        raise CheckpointError(
            f"{run_dir} was run with model preset {state.model_preset!r}, not {model_preset!r}; resume with the "
            "run's own settings"
        )
    if state.round > num_rounds:
        raise CheckpointError(
            f"{run_dir} already completed round {state.round}, beyond num-server-rounds {num_rounds}"
        )
    discarded = _cut_after(run_dir, state.round)
    config = read_json(run_dir / CONFIG_FILE)
    config.setdefault("resumed", []).append(
        {
            "at_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "after_round": state.round,
            "records_discarded": discarded,
        }
    )
    atomic_write_json(run_dir / CONFIG_FILE, config)
    return RunFolder(run_dir), state


def _cut_after(run_dir: Path, last_round: int) -> int:
    """Move records of rounds after `last_round` out of the per-round files; returns how many were moved."""
    moved = []
    for name in (METRICS_FILE, ROUNDS_FILE):
        path = run_dir / name
        if not path.is_file():
            continue
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by the crash
                moved.append({"file": name, "line": line})
                continue
            if int(record.get("round", 0)) > last_round:
                moved.append({"file": name, "record": record})
            else:
                kept.append(line)
        if len(kept) != len(lines):
            atomic_write_text(path, "".join(line + "\n" for line in kept))
    if moved:
        (run_dir / DISCARDED_FILE).parent.mkdir(exist_ok=True)
        with open(run_dir / DISCARDED_FILE, "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(item, sort_keys=True) + "\n" for item in moved)
    return len(moved)


def initial_model(path: Path, model_preset: str, fresh: ArrayRecord) -> ArrayRecord:
    """A saved global model (final.pt, best.pt, latest.pt) as the start of a new run: same preset, same arrays."""
    try:
        state, _ = load_saved_model(path, model_preset, "init-model")
    except ValueError as error:
        raise CheckpointError(str(error)) from None
    expected = model_spec(fresh)
    arrays = ArrayRecord(
        {name: state[name].to(getattr(torch, spec.dtype)) for name, spec in expected.items() if name in state}
    )
    if model_spec(arrays) != expected or set(state) != set(expected):
        raise CheckpointError(f"init-model {path} does not fit the {model_preset!r} model's arrays")
    return arrays
