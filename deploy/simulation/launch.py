"""`oncofed simulate`: the whole federation on this machine, in Flower's Simulation Engine via `flwr run`.

We start our own `flower-superlink --simulation` on a free port (rather than letting `flwr run` start its
detached one on a fixed port, which it never stops), point a connection in our FLWR_HOME at it, submit
the app, stream its log, and stop every process we started — on success, error or Ctrl-C. Each launch marks the
environment of what it starts with its own id (LAUNCH_ENV), which every descendant inherits, so clean-up finds
Ray's processes re-parented away from our tree, and never touches another launch's, even one sharing FLWR_HOME.
"""

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deploy.flower_env import flower_env, flower_executable, toml_value, write_connection
from deploy.processes import (
    StartedProcess,
    follow_log,
    free_port,
    processes_with_env,
    start_process,
    stop_trees,
    tail,
    wait_for_health,
)
from models.shared.atomic import atomic_write_text

CONNECTION = "oncofed-sim"
LAUNCH_ENV = "ONCOFED_LAUNCH_ID"
ROUND_LINE = re.compile(r"\[ROUND (\d+)/(\d+)\]")


@dataclass(frozen=True)
class SimulationPlan:
    """Everything `flwr run` needs, checked before any process starts (deploy/simulation/plan.py)."""

    app_dir: Path
    run_dir: Path
    n_sites: int
    run_config: dict[str, bool | int | float | str]
    """Overrides of [tool.flwr.app.config]; the settings it leaves out keep the app's defaults."""


def run_simulation(plan: SimulationPlan, on_line: Callable[[str], None]) -> int:
    """Run the federation; returns `flwr run`'s exit code. Every process started here is stopped here."""
    flwr_home = plan.run_dir / "flwr-home"
    logs = plan.run_dir / "logs"
    launch = uuid.uuid4().hex
    env = {**flower_env(flwr_home), LAUNCH_ENV: launch}
    port = free_port()
    started: list[StartedProcess] = []
    try:
        superlink = start_process(
            "flower-superlink",
            [
                flower_executable("flower-superlink"),
                "--insecure",
                "--simulation",
                "--isolation",
                "subprocess",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--disable-runtime-dependency-installation",
            ],
            env,
            logs / "superlink.log",
        )
        started.append(superlink)
        wait_for_health(superlink, f"http://127.0.0.1:{port}/health")
        write_connection(flwr_home, CONNECTION, f"127.0.0.1:{port}")
        overrides = flwr_home / "run-config.toml"
        atomic_write_text(overrides, "".join(f"{k} = {toml_value(v)}\n" for k, v in plan.run_config.items()))
        offset = (logs / "flwr-run.log").stat().st_size if (logs / "flwr-run.log").exists() else 0  # resumed
        runner = start_process(
            "flwr run",
            [
                flower_executable("flwr"),
                "run",
                str(plan.app_dir),
                CONNECTION,
                "--stream",
                "--run-config",
                str(overrides),
                "--federation-config",
                f"num-supernodes={plan.n_sites}",
            ],
            env,
            logs / "flwr-run.log",
        )
        started.append(runner)
        follow_log(runner, on_line, offset=offset)
        return runner.popen.wait()
    finally:
        # Ray's processes outlive flwr-simulation and are re-parented away from our tree; they still carry this
        # launch's id, which no other process has. All are stopped together (one grace period, however many
        # ignore SIGTERM); a second sweep catches any process started while the first was read.
        stop_trees([p.pid for p in reversed(started)] + processes_with_env(LAUNCH_ENV, launch))
        stop_trees(processes_with_env(LAUNCH_ENV, launch))
        for process in started:
            process.popen.wait(timeout=5)


def failure_context(run_dir: Path) -> str:
    """The last lines of the Flower logs, for an error message."""
    return "\n".join(
        f"--- {path.name} ---\n{tail(path)}" for path in sorted((run_dir / "logs").glob("*.log"))
    )
