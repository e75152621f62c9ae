"""`oncofed simulate`: the whole federation on this machine, in Flower's Simulation Engine via `flwr run`.

We start our own `flower-superlink --simulation` on a free port (rather than letting `flwr run` start its
detached one on a fixed port, which it never stops), point a connection in our FLWR_HOME at it, submit
the app, stream its log, and stop every process we started — on success, error or Ctrl-C. Each launch marks the
environment of what it starts with its own id (LAUNCH_ENV), which every descendant inherits, so clean-up finds
Ray's processes re-parented away from our tree, and never touches another launch's, even one sharing FLWR_HOME.
"""

import re
import shutil
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deploy.flower_env import flower_env, toml_value, write_connection
from deploy.processes import (
    StartedProcess,
    follow_log,
    free_port,
    processes_with_env,
    start_process,
    stop_tree,
    tail,
    wait_for_health,
)

CONNECTION = "oncofed-sim"
LAUNCH_ENV = "ONCOFED_LAUNCH_ID"
ROUND_LINE = re.compile(r"\[ROUND (\d+)/(\d+)\]")


@dataclass(frozen=True)
class SimulationPlan:
    """Everything `flwr run` needs, checked before any process starts."""

    app_dir: Path
    run_dir: Path
    n_sites: int
    run_config: dict[str, bool | int | float | str]


def flower_executable(name: str) -> str:
    """The Flower command installed beside this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(
            f"`{name}` not found; install the project (`make install`) into this environment"
        )
    return found


def app_directory() -> Path:
    """The Flower app (the folder with pyproject.toml's [tool.flwr.app]): this source tree."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise FileNotFoundError(
            f"no pyproject.toml in {root}: `oncofed simulate` runs from a source checkout "
            "installed with `pip install -e .`"
        )
    return root


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
        overrides.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in plan.run_config.items()), "utf-8")
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
        for process in reversed(started):
            process.stop()
        # Ray's processes outlive flwr-simulation and are re-parented away from our tree; they still carry this
        # launch's id, which no other process has.
        for pid in processes_with_env(LAUNCH_ENV, launch):
            stop_tree(pid)


def failure_context(run_dir: Path) -> str:
    """The last lines of the Flower logs, for an error message."""
    return "\n".join(
        f"--- {path.name} ---\n{tail(path)}" for path in sorted((run_dir / "logs").glob("*.log"))
    )
