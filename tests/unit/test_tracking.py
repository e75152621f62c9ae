"""The coordinator's runs in MLflow (server_app/run_record/tracking.py), through the ServerApp itself on a ScriptedGrid
(real Flower Messages, the sites' own reply builders, no process; tracked_federation.py) and the default store:
sqlite in the run folder.
"""

import json
from pathlib import Path

import pytest
from mlflow_records import released_only, the_run
from scripted_grid import ScriptedGrid, trained
from tracked_federation import FAB, run_config, scripted_sites

from models.shared.run_config import RUN_SETTINGS, TRACKING_URI, Owner
from server_app.app import run_federation
from server_app.run_record.run_folder import read_metrics
from server_app.run_record.tracking import EMBEDDED_ARTIFACTS, EMBEDDED_STORE, STATE_FILE, track_run


class CoordinatorDied(Exception):
    pass


@pytest.mark.parametrize(("messages", "logged"), [("two", [0, 1, 2]), ("one", [0, 1])])
def test_a_failed_run_and_its_resume_are_one_mlflow_run_holding_each_released_value_once(
    tmp_path, flower_task, messages, logged
):
    """With one message per round, round 2's validation rides on round 3's message: the failed run has logged
    rounds 0 and 1, and the resumed one logs round 2 on."""
    run_dir = tmp_path / "run"
    sites = scripted_sites()

    def die_in_round_3(message):
        if message.content["config"]["server-round"] == 3:
            raise CoordinatorDied
        return trained(message, 0.1, 6)

    sites[11].train = die_in_round_3
    with pytest.raises(CoordinatorDied):
        run_federation(
            ScriptedGrid(sites), run_config(run_dir, num_server_rounds=4, round_messages=messages), FAB
        )

    failed = the_run(run_dir)
    assert failed.status == "FAILED"
    assert failed.steps("pooled/dice-mean") == logged  # round 3 was under way: not logged
    assert failed.artifacts == {"summary.json", "models/best.pt"}  # no report for a run that did not end
    assert json.loads((run_dir / STATE_FILE).read_text())["run_id"] == failed.run_id

    renumbered = scripted_sites(first_node=111)  # a new coordinator: new node ids
    outcome = run_federation(
        ScriptedGrid(renumbered),
        run_config(run_dir, num_server_rounds=4, resume=True, round_messages=messages),
        FAB,
    )
    assert outcome.status == "completed"
    assert track_run(run_dir)  # one sync more, with nothing new: nothing logged twice

    run = the_run(run_dir)  # still one MLflow run: the same
    assert run.run_id == failed.run_id and run.status == "FINISHED"
    for key in ("pooled/dice-mean", "site/hospital-a/dice-mean", "round/sites-reported"):
        assert run.steps(key) == [0, 1, 2, 3, 4], key
    assert run.steps("round/model-updated") == [1, 2, 3, 4]
    assert run.steps("site/hospital-a/train/train-loss") == [1, 2, 3, 4]
    assert run.steps("bytes/train-down") == [0, 1, 2, 3, 4] and run.histories["bytes/train-down"][1][1] > 0
    assert dict(run.histories["round/sites-reported"])[4] == 2.0  # hospital-a and hospital-c
    released_only(run, run_dir)
    assert [key for key in run.histories if "median" in key or "-q1" in key] == []
    suppressed = {key.split("/", 2)[2] for key in run.histories if key.startswith("site/hospital-b/")}
    assert suppressed and all(key.startswith(("train/", "bytes/")) for key in suppressed), suppressed
    assert not any(r["metrics"] for r in read_metrics(run_dir) if r["site"] == "hospital-b")

    logged_settings = {s.key for s in RUN_SETTINGS if s.owner in (Owner.COORDINATOR, Owner.SHARED)}
    assert set(run.params) == logged_settings - {TRACKING_URI.key} | {"fab-sha256", "strategy-description"}
    assert run.params["num-server-rounds"] == "4" and run.params["resume"] == "false"  # as the run began
    assert run.params["fab-sha256"] == f"sha256:{FAB.hash}"
    assert run.params["strategy-description"].startswith("FedAvg")
    assert {"report.html", "report.json", "metrics.csv", "model_card.md", "models/best.pt"} <= run.artifacts
    logged = Path(run_dir / EMBEDDED_ARTIFACTS).rglob("report.html")
    assert [p.read_bytes() for p in logged] == [(run_dir / "report.html").read_bytes()]
    assert (run_dir / EMBEDDED_STORE).is_file()


def test_tracking_none_writes_no_store(tmp_path, flower_task):
    run_dir = tmp_path / "run"
    run_federation(
        ScriptedGrid(scripted_sites()), run_config(run_dir, num_server_rounds=1, tracking_uri="none")
    )
    assert (run_dir / "report.html").is_file()
    assert not (run_dir / EMBEDDED_STORE).exists() and not (run_dir / STATE_FILE).exists()
