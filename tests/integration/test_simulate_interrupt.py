"""Ctrl-C or `kill` during `oncofed simulate` stops every Flower process it started."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_prep.synth.federation import write_federation
from deploy.processes import processes_with_env, stop_tree
from models.shared.exit_codes import ExitCode


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_everything(tmp_path, signum):
    write_federation(tmp_path / "fed", n_sites=2, seed=4, preset="tiny")
    run_dir = tmp_path / "run"
    flwr_home = str((run_dir / "flwr-home").resolve())
    oncofed = Path(sys.executable).parent / "oncofed"
    command = [
        str(oncofed),
        "simulate",
        "--data",
        str(tmp_path / "fed"),
        "--out",
        str(run_dir),
        "--rounds",
        "50",
        "--preset",
        "tiny",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300  # generous: a loaded 2-core machine starts Flower slowly
        while not (run_dir / "metrics.jsonl").exists():  # the federation is running: round 0 was filed
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.5)
        assert processes_with_env("FLWR_HOME", flwr_home), "expected running Flower processes"
        process.send_signal(signum)
        process.wait(timeout=60)
        assert process.returncode == ExitCode.INTERRUPTED, process.stderr.read().decode()
        assert processes_with_env("FLWR_HOME", flwr_home) == []
    finally:
        stop_tree(process.pid, grace_s=1.0)
