"""Submit a training run to the running coordinator with `flwr run`, and follow the ServerApp's log.

What is submitted is a FAB file: the kit's release (`release/`, built by `oncofed provision`, pre-approved by every
site), or a new release given with `--fab` that the sites must approve first. `flwr run` takes only an app
folder, so the FAB is unpacked into a private temporary folder and Flower's rebuild of it is checked to have the
FAB's hash (deploy/release_fab.py): what reaches the sites is exactly those bytes, from a wheel install too.

The run folder (metrics.jsonl, summary.json, models/, refusals.jsonl) is written by the ServerApp on the
coordinator host, in the kit's runs/<time>/; the command's own `flwr run` log goes to runs/<time>/logs/flwr-run.log.
"""

import datetime as dt
import re
import shutil
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
from flwr.common.config import parse_config_args

from deploy.coordinator import coordinator_env
from deploy.flower_env import flower_executable, toml_value
from deploy.kit import CONNECTION, CoordinatorKit
from deploy.processes import follow_log, start_process
from deploy.release_fab import FabError, FabInfo, read_fab, unpack_for_submission
from deploy.revocation import active_sites
from models.atomic import atomic_write_text
from models.presets import get_preset

RUN_STARTED = re.compile(r"Successfully started run (\d+)")
RESERVED_KEYS = {"num-server-rounds", "model-preset", "run-dir"}


class CoordinatorNotRunning(RuntimeError):
    """The kit's SuperLink does not answer; the message says how to start it."""


@dataclass(frozen=True)
class RunPlan:
    kit: CoordinatorKit
    run_dir: Path
    run_config: dict[str, bool | int | float | str]
    fab: Path
    """The FAB submitted: the kit's release, or `--fab`."""
    app: FabInfo


def plan_run(
    kit: CoordinatorKit, rounds: int, preset: str, overrides: str = "", fab: Path | None = None
) -> RunPlan:
    """Check the inputs and choose a new run folder; ValueError names the bad value.

    `overrides` are more run-config values as `key=value` pairs (`local-epochs=1 min-sites=2`): any key of the
    app's [tool.flwr.app.config] except those with their own option or chosen here. `fab`: a new release to
    submit instead of the kit's.
    """
    fab = (fab or kit.release).resolve()
    try:
        _, app = read_fab(fab)
    except FabError as error:
        raise ValueError(str(error)) from None
    if fab == kit.release.resolve() and app.sha256 != kit.release_sha256:
        raise ValueError(
            f"{fab} has sha256 {app.sha256}, but the kit records {kit.release_sha256} for its release: the file was "
            "changed; restore it, or submit a new release with --fab"
        )
    get_preset(preset)  # ValueError naming the valid presets
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
    try:
        extra = parse_config_args([overrides]) if overrides.strip() else {}
    except click.ClickException as error:
        raise ValueError(f"--run-config {overrides!r}: {error.message}") from None
    known = set(app.config_keys)
    unknown = sorted(set(extra) - known)
    if unknown:
        raise ValueError(
            f"--run-config: unknown key {unknown[0]!r}; the run settings are: {', '.join(sorted(known))}"
        )
    reserved = sorted(set(extra) & RESERVED_KEYS)
    if reserved:
        raise ValueError(
            f"--run-config sets {', '.join(reserved)}; use --rounds and --preset, the run folder is "
            "chosen by the command"
        )
    run_dir = kit.runs / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if run_dir.exists():
        raise ValueError(f"run folder {run_dir} already exists; wait a second and submit again")
    return RunPlan(
        kit=kit,
        run_dir=run_dir,
        run_config={
            "num-server-rounds": rounds,
            "model-preset": preset,
            "min-sites": len(active_sites(kit)),
            "run-dir": str(run_dir),
            **extra,
        },
        fab=fab,
        app=app,
    )


def check_coordinator_running(kit: CoordinatorKit) -> None:
    url = f"https://{kit.local_address}/health"
    try:
        with urllib.request.urlopen(
            url, timeout=5, context=ssl.create_default_context(cafile=str(kit.ca_certificate))
        ):
            return
    except (urllib.error.URLError, OSError) as error:
        raise CoordinatorNotRunning(
            f"the coordinator does not answer at {url} ({getattr(error, 'reason', error)}); start it with "
            f"`oncofed coordinator start --kit {kit.root}`"
        ) from None


def submit_run(plan: RunPlan, on_line: Callable[[str], None]) -> int:
    """Run `flwr run --stream` until the run ends; returns its exit code. It is stopped here on any exit."""
    check_coordinator_running(plan.kit)
    env = coordinator_env(plan.kit)
    logs = plan.run_dir / "logs"
    logs.mkdir(parents=True)
    overrides = logs / "run-config.toml"
    atomic_write_text(overrides, "".join(f"{k} = {toml_value(v)}\n" for k, v in plan.run_config.items()))
    app_folder = Path(
        tempfile.mkdtemp(prefix="oncofed-app-")
    )  # 0700: only we can change it before flwr reads it
    try:
        submitted = unpack_for_submission(plan.fab, app_folder / "app")
        if submitted.sha256 != plan.app.sha256:
            raise FabError(f"{plan.fab} changed while it was being submitted; submit again")
        runner = start_process(
            "flwr run",
            [
                flower_executable("flwr"),
                "run",
                str(app_folder / "app"),
                CONNECTION,
                "--stream",
                "--run-config",
                str(overrides),
            ],
            env,
            logs / "flwr-run.log",
        )
        try:
            follow_log(runner, on_line)
            return runner.popen.wait()
        finally:
            runner.stop()
    finally:
        shutil.rmtree(app_folder, ignore_errors=True)


def run_id_in(log_path: Path) -> int | None:
    """The id Flower gave the run, from the `flwr run` log (for `flwr stop`/`flwr log`)."""
    match = RUN_STARTED.search(log_path.read_text(errors="replace")) if log_path.is_file() else None
    return int(match.group(1)) if match else None
