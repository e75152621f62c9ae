"""The round checkpoint holds what a new ServerApp needs to continue: the model bit for bit, the strategy's own
state (hook: state_dict / load_state_dict), the best round, the site map; it loads without unpickling code."""

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from server_app.rounds.round_checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    RoundState,
    load_round_state,
    restore_strategy,
    save_round_state,
    strategy_state,
)
from server_app.run_record.best_model import BestRound


class ServerOptimiser:
    """A strategy with state of its own, as FedAdam keeps its moments."""

    def __init__(self) -> None:
        self.moments = {"m": np.zeros(3, np.float32), "v": np.zeros(3, np.float32)}
        self.step = 0

    def state_dict(self) -> dict:
        return {"moments": self.moments, "step": self.step, "betas": [0.9, 0.99]}

    def load_state_dict(self, state: dict) -> None:
        self.moments, self.step = state["moments"], state["step"]


def state(round_: int, strategy: object | None = None) -> RoundState:
    arrays = ArrayRecord(
        {
            "w": Array(np.arange(6, dtype=np.float32).reshape(2, 3) / 7),
            "count": Array(np.array([3], dtype=np.int64)),
        }
    )
    return RoundState(
        round=round_,
        arrays=arrays,
        model_preset="tiny",
        strategy_state=strategy_state(strategy),
        best=BestRound(1, {"hospital-a": (0.5, 3)}, ["hospital-a"]).state(),
        sites={"names": {11: "hospital-a"}, "overviews": {"hospital-a": {"n-cases-usable": 6}}},
        presence={"last_heard": {"hospital-a": 1.0}},
        pooled={0: {"dice-mean": 0.4}, 1: {"dice-mean": 0.5}},
    )


def test_a_checkpoint_round_trips_exactly(tmp_path: Path):
    optimiser = ServerOptimiser()
    optimiser.moments["m"][:] = [0.1, 0.2, 0.3]
    optimiser.step = 7
    save_round_state(tmp_path, state(2, optimiser))

    loaded = load_round_state(tmp_path)
    assert loaded.round == 2 and loaded.model_preset == "tiny"
    assert {k: (a.dtype, a.shape) for k, a in loaded.arrays.items()} == {
        "w": ("float32", (2, 3)),
        "count": ("int64", (1,)),
    }
    np.testing.assert_array_equal(
        loaded.arrays["w"].numpy(), np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    )
    assert BestRound.from_state(loaded.best).round == 1 and loaded.sites["names"] == {11: "hospital-a"}
    assert loaded.pooled == {0: {"dice-mean": 0.4}, 1: {"dice-mean": 0.5}}

    resumed = ServerOptimiser()
    restore_strategy(resumed, loaded.strategy_state)
    assert resumed.step == 7 and isinstance(resumed.moments["m"], np.ndarray)
    np.testing.assert_array_equal(resumed.moments["m"], np.array([0.1, 0.2, 0.3], np.float32))
    payload = torch.load(
        tmp_path / CHECKPOINT_FILE, weights_only=True
    )  # nothing but tensors and plain values
    assert payload["round"] == 2
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["checkpoint.pt"]  # no temp file left


def test_a_strategy_without_state_stores_none_and_a_stateful_checkpoint_needs_a_loader(tmp_path: Path):
    save_round_state(tmp_path, state(1))
    assert load_round_state(tmp_path).strategy_state is None
    with pytest.raises(CheckpointError, match="has no load_state_dict"):
        restore_strategy(object(), {"step": 1})


def test_a_missing_or_foreign_checkpoint_says_what_to_do(tmp_path: Path):
    with pytest.raises(CheckpointError, match="stopped before its first round ended"):
        load_round_state(tmp_path)
    (tmp_path / "state").mkdir()
    torch.save({"something": 1}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="not a round checkpoint"):
        load_round_state(tmp_path)
