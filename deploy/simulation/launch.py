"""`oncofed simulate`: the whole federation on this machine, in Flower's Simulation Engine via `flwr run`.

We start our own `flower-superlink --simulation` on a free port (rather than letting `flwr run` start its
detached one on a fixed port, which it never stops), point a connection in our FLWR_HOME at it, submit
the app, stream its log, and stop every process we started — on success, error or Ctrl-C. The processes are one
ProcessGroup (deploy/processes.py): Ray's processes, re-parented away from our tree, carry its mark and are stopped
with the rest, and never another launch's, even one sharing FLWR_HOME.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deploy.flower_env import flower_env, flower_executable, toml_value, write_connection
from deploy.flower_log import raised_exception, without_tracebacks
from deploy.processes import ProcessGroup, follow_log, free_port, tail, wait_for_health
from models.shared.atomic import atomic_write_text

CONNECTION = "oncofed-sim"
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
    env = flower_env(flwr_home)
    port = free_port()
    with ProcessGroup() as processes:
        superlink = processes.start(
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
        wait_for_health(superlink, f"http://127.0.0.1:{port}/health")
        write_connection(flwr_home, CONNECTION, f"127.0.0.1:{port}")
        overrides = flwr_home / "run-config.toml"
        atomic_write_text(overrides, "".join(f"{k} = {toml_value(v)}\n" for k, v in plan.run_config.items()))
        offset = (logs / "flwr-run.log").stat().st_size if (logs / "flwr-run.log").exists() else 0  # resumed
        runner = processes.start(
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
        follow_log(runner, on_line, offset=offset)
        return runner.popen.wait()


def failure_context(run_dir: Path) -> str:
    """The last lines of the Flower logs, tracebacks included: for a developer's error message (tests, bench)."""
    return "\n".join(
        f"--- {path.name} ---\n{tail(path)}" for path in sorted((run_dir / "logs").glob("*.log"))
    )


def failure_summary(run_dir: Path) -> str:
    """For an operator's error message: the exception the ServerApp raised, in one line, when Flower reported one,
    else the last lines of the Flower logs without their tracebacks; and where the logs (which keep them) are."""
    logs = run_dir / "logs"
    if (raised := raised_exception(logs / "flwr-run.log")) is not None:
        return f"the ServerApp raised {raised}; Flower's logs are in {logs}"
    return f"Flower's logs are in {logs}\n" + "\n".join(
        f"--- {path.name} ---\n{without_tracebacks(tail(path, 40))}" for path in sorted(logs.glob("*.log"))
    )
