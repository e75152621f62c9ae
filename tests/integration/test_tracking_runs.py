"""Real tiny federations in MLflow (slow tier): a 2-round simulation with central DP and a site that withholds, read
back from its run folder's own store; and `oncofed simulate --tracking-uri` to a real `mlflow server`.

The fast tests of the same behaviour are tests/unit/test_tracking.py and test_tracking_server.py (ScriptedGrid);
a resumed simulation continuing its MLflow run is checked in test_simulate_resume.py.
"""

import subprocess

import pytest
from loopback_federation import ONCOFED
from mlflow_records import MlflowServer, released_only, the_run
from tiny_capture_run import REPORTING, SUPPRESSED, option_run

from data_prep.synth.federation import write_federation
from server_app.run_record.run_folder import read_metrics
from server_app.run_record.tracking import EMBEDDED_STORE, STATE_FILE

pytestmark = pytest.mark.slow

DP = {"min-sites": 1, "dp-noise-multiplier": 0.2, "dp-clipping-norm": 0.05}
"""hospital-a alone changes the model (hospital-b declines to train), under central DP: ε per round."""


def test_a_two_round_simulation_is_in_its_run_folders_mlflow_store(tmp_path_factory):
    captured = option_run(tmp_path_factory, "tracking", DP, rounds=2)
    run = the_run(captured.run_dir)

    assert run.status == "FINISHED"
    assert run.params["num-server-rounds"] == "2" and run.params["dp-noise-multiplier"] == "0.2"
    assert "central DP" in run.params["strategy-description"]
    for key in (
        "pooled/dice-mean",
        f"site/{REPORTING}/dice-mean",
        "round/sites-reported",
        "bytes/evaluate-up",
    ):
        assert run.steps(key) == [0, 1, 2], key
    records = read_metrics(captured.run_dir)
    epsilon = {r["round"]: r["privacy"]["epsilon"] for r in records if r.get("privacy")}
    assert sorted(epsilon) == [1, 2] and dict(run.histories["dp/epsilon"]) == epsilon
    assert epsilon[2] > epsilon[1]
    released_only(run, captured.run_dir)
    withheld = {key.split("/", 2)[2] for key in run.histories if key.startswith(f"site/{SUPPRESSED}/")}
    assert withheld and all(key.startswith("bytes/") for key in withheld), (
        withheld
    )  # no number about its cases
    assert any(
        r["withheld"] for r in records if r["site"] == REPORTING
    )  # its medians: withheld, and not logged
    assert {"report.html", "report.json", "metrics.csv", "model_card.md", "models/best.pt"} <= run.artifacts


def test_oncofed_simulate_sends_the_run_to_a_tracking_server(tmp_path):
    write_federation(tmp_path / "data", n_sites=2, seed=3, preset="tiny")
    server = MlflowServer(tmp_path / "mlflow")
    run_dir = tmp_path / "run"
    try:
        server.start()
        result = subprocess.run(
            [
                ONCOFED,
                "simulate",
                "--data",
                str(tmp_path / "data"),
                "--out",
                str(run_dir),
                "--rounds",
                "2",
                "--preset",
                "tiny",
                "--seed",
                "1",
                "--run-config",
                "local-epochs=1 sim-min-train-cases=1",
                "--tracking-uri",
                server.url,
            ],
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        run = the_run(run_dir, server.url)
    finally:
        server.stop()

    assert run.status == "FINISHED" and run.params["num-server-rounds"] == "2"
    for site in ("hospital-a", "hospital-b"):
        assert run.steps(f"site/{site}/dice-mean") == [0, 1, 2]
    assert run.steps("pooled/dice-mean") == [0, 1, 2]
    released_only(run, run_dir)
    assert "report.html" in run.artifacts and "models/best.pt" in run.artifacts
    assert not (run_dir / EMBEDDED_STORE).exists()
    assert server.url in (run_dir / STATE_FILE).read_text()
