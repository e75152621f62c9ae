"""Ctrl-C or `kill` during `oncofed simulate` stops every Flower process it started within a bound, also on a busy
machine; a second Ctrl-C stops it at once."""

import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_prep.synth.federation import write_federation
from deploy.processes import StartedProcess, processes_with_env, start_process, stop_trees
from models.shared.exit_codes import ExitCode

STOP_BOUND_S = 20.0
"""The most a first Ctrl-C may take to stop everything, on a loaded machine."""
START_TIMEOUT_S = 300.0
"""Generous: a loaded 2-core machine starts Flower slowly."""
ONCOFED = str(Path(sys.executable).parent / "oncofed")


class Simulation:
    """`oncofed simulate` of two tiny sites for 50 rounds (far more than any test waits for), in a process of its own."""

    def __init__(self, data: Path, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.flwr_home = str((run_dir / "flwr-home").resolve())
        self.stderr_path = run_dir.with_suffix(".stderr")
        command = [ONCOFED, "simulate", "--data", str(data), "--out", str(run_dir), "--rounds", "50"]
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [*command, "--preset", "tiny"], stdout=subprocess.DEVNULL, stderr=stderr
            )

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for_file(self, path: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not path.exists():
            assert self.process.poll() is None, self.stderr()
            assert time.monotonic() < deadline, f"{path} did not appear"
            time.sleep(0.2)

    def wait_for_round_0(self) -> None:
        """Until round 0 (the initial model validated at every site) is filed: the federation is running."""
        self.wait_for_file(self.run_dir / "metrics.jsonl")
        assert processes_with_env("FLWR_HOME", self.flwr_home), "expected running Flower processes"

    def stop_time(self, signum: int) -> float:
        """Send `signum`; seconds until the command exited (it must, within STOP_BOUND_S, interrupted)."""
        clock = time.monotonic()
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=STOP_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"still running {STOP_BOUND_S:.0f} s after {signal.Signals(signum).name}:\n{self.stderr()}"
            )
        elapsed = time.monotonic() - clock
        assert self.process.returncode == ExitCode.INTERRUPTED, self.stderr()
        assert processes_with_env("FLWR_HOME", self.flwr_home) == [], "Flower processes outlived the command"
        return elapsed

    def close(self) -> None:
        stop_trees([self.process.pid, *processes_with_env("FLWR_HOME", self.flwr_home)], grace_s=1.0)


@pytest.fixture
def federation(tmp_path) -> Path:
    write_federation(tmp_path / "fed", n_sites=2, seed=4, preset="tiny")
    return tmp_path / "fed"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_everything(federation, tmp_path, signum):
    simulation = Simulation(federation, tmp_path / "run")
    try:
        simulation.wait_for_round_0()
        simulation.stop_time(signum)
        stderr = simulation.stderr()
        assert "stopping the simulation and every Flower process it started; press Ctrl-C again" in stderr
        assert "error: interrupted; every Flower process it started was stopped" in stderr
    finally:
        simulation.close()


def test_second_interrupt_stops_at_once(federation, tmp_path):
    simulation = Simulation(federation, tmp_path / "run")
    try:
        simulation.wait_for_round_0()
        simulation.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        while "press Ctrl-C again to stop at once" not in simulation.stderr():
            assert time.monotonic() < deadline, simulation.stderr()
            time.sleep(0.05)
        assert simulation.stop_time(signal.SIGINT) < STOP_BOUND_S / 2
        assert "stopping at once: killing every process it started" in simulation.stderr()
    finally:
        simulation.close()


def cpu_load(tmp_path: Path, n: int) -> list[StartedProcess]:
    """`n` processes that each keep a core busy; stopped by the caller, by pid."""
    return [
        start_process(f"load {i}", [sys.executable, "-c", "while True: pass"], {}, tmp_path / f"load-{i}.log")
        for i in range(n)
    ]


@pytest.mark.slow
def test_interrupt_is_bounded_on_a_busy_machine(federation, tmp_path):
    """20 runs in a row with two cores kept busy, each interrupted once: after round 0 (a training round running) or
    at a random moment after the SuperLink started (`flwr run`, Ray and the first round starting); every one stops
    within the bound."""
    chance = random.Random(20)
    times: list[tuple[str, float]] = []
    load = cpu_load(tmp_path, 2)
    try:
        for attempt in range(20):
            simulation = Simulation(federation, tmp_path / f"run-{attempt}")
            try:
                if attempt % 2 == 0:
                    simulation.wait_for_round_0()
                    when = "after round 0"
                else:
                    simulation.wait_for_file(simulation.run_dir / "logs" / "superlink.log")
                    delay = chance.uniform(0.0, 25.0)
                    time.sleep(delay)
                    when = f"{delay:.1f} s after the SuperLink started"
                times.append((when, simulation.stop_time(signal.SIGINT)))
                print(f"run {attempt:2d}: interrupted {when}, exited after {times[-1][1]:.1f} s", flush=True)
            finally:
                simulation.close()
    finally:
        stop_trees([process.pid for process in load], grace_s=0.5)
    seconds = [elapsed for _, elapsed in times]
    print(
        f"exit after Ctrl-C, 20 runs: min {min(seconds):.1f} s, median {statistics.median(seconds):.1f} s, "
        f"max {max(seconds):.1f} s"
    )
    assert len(seconds) == 20 and max(seconds) <= STOP_BOUND_S
