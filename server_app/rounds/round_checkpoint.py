"""The round checkpoint: everything a new ServerApp needs to continue a run after the coordinator died.

Flower 1.42 never relaunches a ServerApp after a SuperLink restart, and `Strategy.start` always counts rounds
from 1, so a resumed run is a new Flower run that starts at the saved round (server_app.rounds.resume). After every
round the ServerApp writes RUN_DIR/state/checkpoint.pt, atomically (temp file, fsync, rename): the round number,
the global model (each array with its own dtype, so a resumed run continues bit for bit), the strategy's state
(`strategy.state_dict()` when the strategy has one, e.g. server optimiser moments; restored with
`load_state_dict`), the best round so far, the site map and when each site was last seen. When a round sends one message per site,
the checkpoint is written after each message and also holds the round trained in it whose validation rides on the
next message (`pending`); the global model it holds is then that round's, the model the next message carries.

The file loads with `torch.load(weights_only=True)`: tensors, numbers, strings, lists and dicts only. NumPy
arrays in a strategy's state are stored as tensors and given back as NumPy arrays.
"""

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord

from models.shared.atomic import atomic_path

CHECKPOINT_FILE = Path("state") / "checkpoint.pt"
FORMAT = 1
NDARRAY = "__ndarray__"


@dataclass
class RoundState:
    round: int
    """The last round whose results are complete (0: only the initial model was validated)."""
    arrays: ArrayRecord
    model_preset: str
    strategy_state: dict | None
    best: dict
    sites: dict
    presence: dict
    pooled: dict[int, dict]
    """Round → the pooled validation over the reporting sites (summary.json's weighted_mean)."""
    pending: dict | None = None
    """Round `round` + 1, trained and awaiting its validation (server_app.rounds.pending_round), when the run
    sends one message per round; `arrays` is then its global model. None: `arrays` is round `round`'s."""


class CheckpointError(ValueError):
    """The checkpoint is missing or unreadable; the message names the file and what to do."""


def save_round_state(run_dir: Path, state: RoundState) -> Path:
    path = run_dir / CHECKPOINT_FILE
    payload = {
        "format": FORMAT,
        "round": state.round,
        "model_preset": state.model_preset,
        "arrays": OrderedDict(state.arrays.to_torch_state_dict()),
        "strategy_state": _to_storable(state.strategy_state),
        "best": state.best,
        "sites": state.sites,
        "presence": state.presence,
        "pooled": {int(k): dict(v) for k, v in state.pooled.items()},
        "pending": state.pending,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_round_state(run_dir: Path) -> RoundState:
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path} does not exist: the run stopped before its first round ended (or {run_dir} is not a run "
            "folder); start a new run instead"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same advice
        raise CheckpointError(f"{path} cannot be read ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a round checkpoint of this version of OncoFed")
    return RoundState(
        round=int(payload["round"]),
        arrays=ArrayRecord(OrderedDict(payload["arrays"])),
        model_preset=str(payload["model_preset"]),
        strategy_state=_from_storable(payload["strategy_state"]),
        best=payload["best"],
        sites=payload["sites"],
        presence=payload["presence"],
        pooled={int(k): v for k, v in payload["pooled"].items()},
        pending=payload.get("pending"),
    )


def strategy_state(strategy: object) -> dict | None:
    """The strategy's own state, when it keeps any (`state_dict()`), e.g. FedAdam's moments."""
    state_dict = getattr(strategy, "state_dict", None)
    return state_dict() if callable(state_dict) else None


def restore_strategy(strategy: object, state: dict | None) -> None:
    """Give a resumed strategy its saved state; a strategy with state but no `load_state_dict` is an error."""
    if state is None:
        return
    load = getattr(strategy, "load_state_dict", None)
    if not callable(load):
        raise CheckpointError(
            f"the checkpoint holds strategy state but {type(strategy).__name__} has no load_state_dict()"
        )
    load(state)


def _to_storable(value: object) -> object:
    if isinstance(value, np.ndarray):
        return {NDARRAY: torch.from_numpy(np.ascontiguousarray(value).copy())}
    if isinstance(value, dict):
        return {k: _to_storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_storable(v) for v in value]
    return value


def _from_storable(value: object) -> object:
    if isinstance(value, dict):
        if set(value) == {NDARRAY}:
            return value[NDARRAY].numpy()
        return {k: _from_storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_storable(v) for v in value]
    return value
