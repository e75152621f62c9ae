"""`oncofed simulate --resume RUN_DIR`: a simulation stopped after round 1 of 2 (Ctrl-C) continues in its folder
with round 2 only, and ends with the model an uninterrupted simulation with the same seed (and the same site
secrets, which choose each site's validation split) ends with; its MLflow run (the run folder's store) is continued,
not repeated."""

import json
import os
import signal
import subprocess
import time
from collections import Counter

import pytest
import torch
from loopback_federation import ONCOFED
from mlflow_records import released_only, the_run
from synthetic_site import fix_site_secret

from data_prep.synth.federation import write_federation
from deploy.processes import processes_with_env, start_process
from models.weights import load_checkpoint
from server_app.rounds.round_checkpoint import CHECKPOINT_FILE, load_round_state
from server_app.run_record.run_folder import read_metrics, read_rounds

pytestmark = pytest.mark.slow

SITES = ["hospital-a", "hospital-b"]


def simulate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ONCOFED, "simulate", *args], capture_output=True, text=True, timeout=3600, check=False
    )


def test_a_stopped_simulation_resumes_to_the_uninterrupted_model(tmp_path):
    write_federation(tmp_path / "data", n_sites=2, seed=3, preset="tiny")
    common = ["--data", str(tmp_path / "data"), "--rounds", "2", "--preset", "tiny", "--seed", "1"]
    # both tiny sites train (they have three to five training cases): the model changes in every round
    common += ["--run-config", "sim-min-train-cases=1 local-epochs=1"]
    for run in ("reference", "stopped"):  # the same site secrets: the same validation split in both runs
        for index, site in enumerate(SITES):
            fix_site_secret(tmp_path / run / "sites" / site, 21 + index)
    reference = simulate(*common, "--out", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-3000:]

    run_dir = tmp_path / "stopped"
    process = start_process(
        "simulate",
        [ONCOFED, "simulate", *common, "--out", str(run_dir)],
        dict(os.environ),
        tmp_path / "stopped.out",
    )
    try:
        deadline = time.monotonic() + 1800
        while not ((run_dir / CHECKPOINT_FILE).is_file() and load_round_state(run_dir).round >= 1):
            assert process.popen.poll() is None and time.monotonic() < deadline, (
                tmp_path / "stopped.out"
            ).read_text()
            time.sleep(1)
        process.popen.send_signal(signal.SIGTERM)  # as Ctrl-C: simulate stops everything it started
        assert process.popen.wait(timeout=120) != 0
    finally:
        process.stop()
    assert processes_with_env("FLWR_HOME", str((run_dir / "flwr-home").resolve())) == []
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] in ("stopped", "running") and summary.get("final_model") is None
    stopped = the_run(run_dir)
    assert stopped.status in ("KILLED", "RUNNING")  # KILLED when the ServerApp got to say so
    assert stopped.steps("pooled/dice-mean")[:1] == [0]  # round 1 too, unless the stop came before its sync

    resumed = simulate("--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "(resumed)" in resumed.stdout
    pairs = Counter((r["round"], r["site"]) for r in read_metrics(run_dir))
    assert pairs == Counter({(rnd, site): 1 for rnd in range(3) for site in SITES})
    assert [r["train"]["aggregated"] for r in read_rounds(run_dir)[1:]] == [True, True]  # the model moved
    tracked = the_run(run_dir)  # one MLflow run, continued
    assert tracked.run_id == stopped.run_id and tracked.status == "FINISHED"
    for key in ("pooled/dice-mean", *(f"site/{site}/dice-mean" for site in SITES)):
        assert tracked.steps(key) == [0, 1, 2], key
    released_only(tracked, run_dir)
    final, meta = load_checkpoint(run_dir / "models" / "final.pt")
    expected, _ = load_checkpoint(tmp_path / "reference" / "models" / "final.pt")
    assert meta["round"] == 2
    for name, value in expected.items():
        torch.testing.assert_close(final[name], value, atol=1e-5, rtol=1e-4)
