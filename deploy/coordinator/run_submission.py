"""Submit a training run to the running coordinator with `flwr run`, and follow the ServerApp's log.

What is submitted is a FAB file: the kit's release (`release/`, built by `oncofed provision`, pre-approved by every
site), or a new release given with `--fab` that the sites must approve first. `flwr run` takes only an app
folder, so the FAB is unpacked into a private temporary folder and Flower's rebuild of it is checked to have the
FAB's hash (deploy/kits/release_fab.py): what reaches the sites is exactly those bytes, from a wheel install too.

The run folder (metrics.jsonl, summary.json, models/, refusals.jsonl) is written by the ServerApp on the
coordinator host, in the kit's runs/<time>/; the command's own `flwr run` log goes to runs/<time>/logs/flwr-run.log.
A run whose coordinator died is continued in its own folder (`plan_resume`): a new Flower run of the same release
that starts after the round of the folder's checkpoint, with the run's saved settings.
"""

import datetime as dt
import shutil
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import click
from flwr.common.config import parse_config_args

from deploy.coordinator.revocation import active_sites
from deploy.coordinator.start import coordinator_env
from deploy.flower_env import flower_executable, toml_value
from deploy.flower_log import RUN_STARTED, WithoutTracebacks
from deploy.kits.contents import CONNECTION, CoordinatorKit
from deploy.kits.release_fab import FabError, FabInfo, read_fab, unpack_for_submission
from deploy.processes import ProcessGroup, follow_log
from models.presets import get_preset
from models.shared.atomic import atomic_write_text
from models.shared.run_config import (
    EXPECTED_SITES,
    INIT_MODEL,
    MIN_SITES,
    MODEL_PRESET,
    NUM_SERVER_ROUNDS,
    RESUMABLE_CHANGES,
    RESUME,
    RUN_DIR,
    defaults,
    majority,
)
from server_app.coordinator_settings import ServerRunSettings
from server_app.rounds.round_checkpoint import CHECKPOINT_FILE
from server_app.run_record.run_folder import COMPLETED, CONFIG_FILE, SUMMARY_FILE, read_json

RESERVED_KEYS = {NUM_SERVER_ROUNDS.key, MODEL_PRESET.key, RUN_DIR.key, RESUME.key, INIT_MODEL.key}


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


def parse_overrides(
    overrides: str,
    known: Collection[str],
    reserved: Collection[str] = RESERVED_KEYS,
    options: str = "--rounds, --preset, --resume and --init",
) -> dict[str, bool | int | float | str]:
    """`key=value` pairs (`local-epochs=1 min-sites=2`) of the `known` run settings (the submitted app's
    [tool.flwr.app.config]), except the `reserved` ones, which have their own `options` or are chosen by the
    command; ValueError names the bad one."""
    try:
        extra = parse_config_args([overrides]) if overrides.strip() else {}
    except click.ClickException as error:
        raise ValueError(f"--run-config {overrides!r}: {error.message}") from None
    unknown = sorted(set(extra) - set(known))
    if unknown:
        raise ValueError(
            f"--run-config: unknown key {unknown[0]!r}; the run settings are: {', '.join(sorted(known))}"
        )
    refused = sorted(set(extra) & set(reserved))
    if refused:
        raise ValueError(
            f"--run-config sets {', '.join(refused)}; use {options}, the run folder is chosen by the command"
        )
    try:
        check_run_settings(extra)
    except ValueError as error:
        raise ValueError(f"--run-config: {error}") from None
    return extra


def check_run_settings(overrides: Mapping[str, object]) -> None:
    """Read the run settings with these overrides as each side will (types, ranges, choices and combinations,
    e.g. central DP only with fedavg or fedprox): a bad value is refused here, before a process starts, with the
    setting named (models.shared.run_config.RunConfigError)."""
    from site_app.settings.run_settings import SiteRunSettings

    run_config = {**defaults(), RUN_DIR.key: "/checking", **overrides}
    ServerRunSettings.from_run_config(run_config)
    SiteRunSettings.from_run_config(run_config)


def plan_run(
    kit: CoordinatorKit,
    rounds: int,
    preset: str,
    overrides: str = "",
    init_model: Path | None = None,
    fab: Path | None = None,
) -> RunPlan:
    """Check the inputs and choose a new run folder; ValueError names the bad value.

    The quorum `min-sites` defaults to a majority of the kit's sites not revoked, and the ServerApp is told
    their names so that one that never connects is named. `init_model` starts from a global model an earlier run
    saved. `fab`: a new release to submit instead of the kit's.
    """
    fab, app = release_to_submit(kit, fab)
    get_preset(preset)  # ValueError naming the valid presets
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
    extra = parse_overrides(overrides, app.config_keys)
    sites = active_sites(kit)
    init = {} if init_model is None else {INIT_MODEL.key: str(check_init_model(init_model, preset))}
    run_dir = kit.runs / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if run_dir.exists():
        raise ValueError(f"run folder {run_dir} already exists; wait a second and submit again")
    plan = RunPlan(
        kit=kit,
        run_dir=run_dir,
        run_config={
            NUM_SERVER_ROUNDS.key: rounds,
            MODEL_PRESET.key: preset,
            MIN_SITES.key: majority(len(sites)),
            EXPECTED_SITES.key: ",".join(sites),
            RUN_DIR.key: str(run_dir),
            **init,
            **extra,
        },
        fab=fab,
        app=app,
    )
    ServerRunSettings.from_run_config(plan.run_config)  # quorum and deadlines checked before submitting
    return plan


def check_init_model(path: Path, preset: str) -> Path:
    """A models/*.pt file of an earlier run, of the same model preset (the ServerApp checks its arrays)."""
    from models.weights import load_saved_model

    path = path.expanduser().resolve()
    load_saved_model(path, preset, "--init")
    return path


def release_to_submit(kit: CoordinatorKit, fab: Path | None) -> tuple[Path, FabInfo]:
    """The FAB to submit (`fab`, else the kit's release) and what it holds; ValueError when it is unreadable or
    the kit's release no longer has the hash the kit recorded for it."""
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
    return fab, app


def plan_resume(
    kit: CoordinatorKit, run_dir: Path, rounds: int | None, overrides: str = "", fab: Path | None = None
) -> RunPlan:
    """Continue the run in `run_dir` with its saved settings; only quorum and deadlines (and, with `rounds`, the
    number of rounds) may change. `fab` as for plan_run (the ServerApp warns when the resumed run's app differs
    from the one it started with). ValueError says why a folder cannot be resumed."""
    fab, app = release_to_submit(kit, fab)
    run_dir = run_dir.expanduser().resolve()
    if not (run_dir / CONFIG_FILE).is_file():
        raise ValueError(f"--resume {run_dir}: not a run folder (no {CONFIG_FILE})")
    if not (run_dir / CHECKPOINT_FILE).is_file():
        raise ValueError(
            f"--resume {run_dir}: no round checkpoint ({CHECKPOINT_FILE}): the run stopped before its first round "
            "ended; submit a new run instead"
        )
    saved = read_json(run_dir / CONFIG_FILE).get("run_config", {})
    extra = parse_overrides(overrides, app.config_keys)
    changeable = {setting.key for setting in RESUMABLE_CHANGES}
    fixed = sorted(k for k in extra if k not in changeable)
    if fixed:
        raise ValueError(
            f"--run-config sets {', '.join(fixed)}: a resumed run keeps its settings; only "
            f"{', '.join(sorted(changeable))} may change"
        )
    planned = int(saved.get(NUM_SERVER_ROUNDS.key, 0))
    if rounds is not None and rounds < planned:
        raise ValueError(f"--rounds {rounds} is fewer than the {planned} rounds the run was planned with")
    summary = read_json(run_dir / SUMMARY_FILE)
    if summary.get("status") == COMPLETED and (rounds or planned) <= planned:
        raise ValueError(
            f"--resume {run_dir}: the run completed all its {planned} rounds; give --rounds N (more) to extend it"
        )
    known = set(app.config_keys)
    plan = RunPlan(
        kit=kit,
        run_dir=run_dir,
        run_config={
            **{k: v for k, v in saved.items() if k in known},
            **extra,
            NUM_SERVER_ROUNDS.key: rounds or planned,
            RUN_DIR.key: str(run_dir),
            RESUME.key: True,
            INIT_MODEL.key: "",
        },
        fab=fab,
        app=app,
    )
    ServerRunSettings.from_run_config(plan.run_config)
    return plan


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
    """Run `flwr run --stream` until the run ends; returns its exit code. It is stopped here on any exit. Each line
    of the run's log goes to `on_line` but tracebacks, which only the log file keeps (deploy/flower_log.py)."""
    check_coordinator_running(plan.kit)
    env = coordinator_env(plan.kit)
    logs = plan.run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    overrides = logs / "run-config.toml"
    atomic_write_text(overrides, "".join(f"{k} = {toml_value(v)}\n" for k, v in plan.run_config.items()))
    app_folder = Path(
        tempfile.mkdtemp(prefix="oncofed-app-")
    )  # 0700: only we can change it before flwr reads it
    try:
        submitted = unpack_for_submission(plan.fab, app_folder / "app")
        if submitted.sha256 != plan.app.sha256:
            raise FabError(f"{plan.fab} changed while it was being submitted; submit again")
        log_path = logs / "flwr-run.log"
        offset = log_path.stat().st_size if log_path.exists() else 0  # a resumed run appends to its log
        with ProcessGroup() as processes:  # stopped on any exit, Ctrl-C included
            runner = processes.start(
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
                log_path,
            )
            follow_log(runner, WithoutTracebacks(on_line), offset=offset)
            return runner.popen.wait()
    finally:
        shutil.rmtree(app_folder, ignore_errors=True)


def run_id_in(log_path: Path) -> int | None:
    """The id Flower gave the run's latest submission, from the `flwr run` log (for `flwr stop`/`flwr log`)."""
    found = RUN_STARTED.findall(log_path.read_text(errors="replace")) if log_path.is_file() else []
    return int(found[-1]) if found else None
