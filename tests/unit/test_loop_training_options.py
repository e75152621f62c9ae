"""The training options in the coordinator's federated loop (server_app.app.run_federation) against scripted sites:
float16 replies pass the reply checks and are aggregated in float32, each site's record carries its bytes per
round, and with central DP the ε spent so far; the strategy's state is in the round checkpoint."""

from pathlib import Path

import numpy as np
import pytest
from scripted_grid import ScriptedGrid, ScriptedSite, scripted_run_config

from models.weights import load_checkpoint
from server_app.app import run_federation
from server_app.rounds.round_checkpoint import load_round_state
from server_app.run_record.run_folder import read_metrics, read_rounds
from server_app.strategies.update_direction import COSINES_STATE


def run_config(run_dir: Path, **settings) -> dict:
    return scripted_run_config(run_dir, ["hospital-a", "hospital-b"], **settings)


def two_sites() -> ScriptedGrid:
    return ScriptedGrid(
        {
            11: ScriptedSite("hospital-a", offset=0.1, train_cases=2),
            12: ScriptedSite("hospital-b", offset=0.2, train_cases=6),
        }
    )


def test_float16_replies_are_checked_in_the_transport_dtype_and_every_record_has_its_bytes(
    tmp_path, flower_task
):
    runs = {}
    for dtype in ("float32", "float16"):
        run_dir = tmp_path / dtype
        outcome = run_federation(
            two_sites(), run_config(run_dir, **{"transport-dtype": dtype, "round-messages": "two"})
        )
        assert outcome.status == "completed"
        # no reply was dropped: both sites' training was used in both rounds
        assert [r["train"]["sound"] for r in read_rounds(run_dir)[1:]] == [["hospital-a", "hospital-b"]] * 2
        runs[dtype] = read_metrics(run_dir)
        final, _ = load_checkpoint(run_dir / "models" / "final.pt")
        assert {str(t.dtype) for t in final.values()} == {"torch.float32"}
    for dtype, records in runs.items():
        for record in records:
            assert set(record["bytes"]) == {"train-down", "train-up", "evaluate-down", "evaluate-up"}
            assert record["bytes"]["evaluate-down"] > 0 and record["privacy"] is None
            assert (record["bytes"]["train-up"] > 0) == (record["round"] > 0), dtype
    half = sum(r["bytes"]["train-up"] for r in runs["float16"])
    full = sum(r["bytes"]["train-up"] for r in runs["float32"])
    assert half < 0.6 * full  # the weights travelled in half the bytes


def test_central_dp_epsilon_is_in_every_record_and_the_ledger_in_the_round_checkpoint(
    tmp_path, flower_task, caplog
):
    run_dir = tmp_path / "run"
    config = run_config(run_dir, **{"dp-noise-multiplier": 1.0, "dp-clipping-norm": 0.5})
    assert run_federation(two_sites(), config).status == "completed"
    records = read_metrics(run_dir)
    assert all(r["privacy"] is None for r in records if r["round"] == 0)
    epsilons = [
        {r["privacy"]["epsilon"] for r in records if r["round"] == rnd}
        for rnd in (1, 2)  # one ε per round, the same in every site's record
    ]
    assert all(len(e) == 1 for e in epsilons)
    assert 0 < next(iter(epsilons[0])) < next(iter(epsilons[1]))
    state = load_round_state(run_dir).strategy_state
    assert set(state) == {
        "inner",
        "ledger",
        "epsilon_by_round",
        COSINES_STATE,
    }  # the direction check's cosines
    assert state["inner"]["strategy"] == "fedavg"
    assert (
        "could not be written" not in caplog.text
    )  # the report, though these scripted replies carry no counts
    assert state["epsilon_by_round"]["2"] == pytest.approx(next(iter(epsilons[1])))
    assert np.isfinite(state["epsilon_by_round"]["1"])
