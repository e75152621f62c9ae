"""Submit a training run to the running coordinator with `flwr run`, and follow the ServerApp's log.

The run folder (metrics.jsonl, summary.json, models/) is written by the ServerApp on the coordinator host, in
the kit's runs/<time>/; the command's own `flwr run` log goes to runs/<time>/logs/flwr-run.log.
"""

import datetime as dt
import re
import ssl
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import click
from flwr.common.config import flatten_dict, parse_config_args

from deploy.coordinator import coordinator_env
from deploy.flower_env import app_directory, flower_executable, toml_value
from deploy.kit import CONNECTION, CoordinatorKit
from deploy.processes import follow_log, start_process
from models.atomic import atomic_write_text
from models.presets import get_preset
from models.run_config import RUN_DIR, defaults

RUN_STARTED = re.compile(r"Successfully started run (\d+)")
RESERVED_KEYS = {"num-server-rounds", "model-preset", "run-dir"}


class CoordinatorNotRunning(RuntimeError):
    """The kit's SuperLink does not answer; the message says how to start it."""


@dataclass(frozen=True)
class RunPlan:
    kit: CoordinatorKit
    run_dir: Path
    run_config: dict[str, bool | int | float | str]


def plan_run(kit: CoordinatorKit, rounds: int, preset: str, overrides: str = "") -> RunPlan:
    """Check the inputs and choose a new run folder; ValueError names the bad value.

    `overrides` are more run-config values as `key=value` pairs (`local-epochs=1 min-sites=2`): any key of
    [tool.flwr.app.config] except those with their own option or chosen here.
    """
    get_preset(preset)  # ValueError naming the valid presets
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
    extra = run_config_overrides(overrides)
    run_dir = kit.runs / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if run_dir.exists():
        raise ValueError(f"run folder {run_dir} already exists; wait a second and submit again")
    return RunPlan(
        kit=kit,
        run_dir=run_dir,
        run_config={
            "num-server-rounds": rounds,
            "model-preset": preset,
            "min-sites": len(kit.sites),
            "run-dir": str(run_dir),
            **extra,
        },
    )


def run_config_overrides(overrides: str, reserved_keys: set[str] = RESERVED_KEYS) -> dict[str, object]:
    """`key=value` pairs of --run-config (TOML values), checked: known keys only, none of `reserved_keys`."""
    try:
        extra = parse_config_args([overrides]) if overrides.strip() else {}
    except click.ClickException as error:
        raise ValueError(f"--run-config {overrides!r}: {error.message}") from None
    known = app_config_keys()
    unknown = sorted(set(extra) - known)
    if unknown:
        raise ValueError(
            f"--run-config: unknown key {unknown[0]!r}; the run settings are: {', '.join(sorted(known))}"
        )
    reserved = sorted(set(extra) & reserved_keys)
    if reserved:
        raise ValueError(
            f"--run-config sets {', '.join(reserved)}; use the command's own options (--rounds, --preset, "
            "--seed), the run folder is chosen by the command"
        )
    try:
        check_run_settings(extra)
    except ValueError as error:
        raise ValueError(f"--run-config: {error}") from None
    return extra


def check_run_settings(overrides: Mapping[str, object]) -> None:
    """Read the run settings with these overrides as each side will (types, ranges, choices and combinations,
    e.g. central DP only with fedavg or fedprox): a bad value is refused here, before a process starts, with the
    setting named (models.run_config.RunConfigError)."""
    from server_app.run_settings import ServerRunSettings
    from site_app.run_settings import SiteRunSettings

    run_config = {**defaults(), RUN_DIR.key: "/checking", **overrides}
    ServerRunSettings.from_run_config(run_config)
    SiteRunSettings.from_run_config(run_config)


def app_config_keys() -> set[str]:
    """The run settings the app declares in pyproject.toml's [tool.flwr.app.config]."""
    pyproject = tomllib.loads((app_directory() / "pyproject.toml").read_text(encoding="utf-8"))
    return set(flatten_dict(pyproject["tool"]["flwr"]["app"]["config"]))


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
    runner = start_process(
        "flwr run",
        [
            flower_executable("flwr"),
            "run",
            str(app_directory()),
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


def run_id_in(log_path: Path) -> int | None:
    """The id Flower gave the run, from the `flwr run` log (for `flwr stop`/`flwr log`)."""
    match = RUN_STARTED.search(log_path.read_text(errors="replace")) if log_path.is_file() else None
    return int(match.group(1)) if match else None
