"""`oncofed run`: submit the kit's release (or a new one) to the running coordinator, stream the run's log, and
tell how the run ended. Ctrl-C or SIGTERM stop only the streaming `flwr run`: the run goes on at the coordinator.
"""

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

from deploy.coordinator.console import print_refusals
from deploy.coordinator.run_submission import (
    CoordinatorNotRunning,
    RunPlan,
    plan_resume,
    plan_run,
    run_id_in,
    submit_run,
)
from deploy.coordinator.status import RESTARTED, still_running
from deploy.flower_log import raised_exception
from deploy.kits.contents import CONNECTION, CoordinatorKit, KitError, read_coordinator_kit
from deploy.kits.release_fab import FabError
from deploy.processes import stop_on_signals
from models.shared.exit_codes import CommandError, ExitCode, errors_as
from models.shared.terminal import make_console
from server_app.report.site_table import evaluations, site_table
from server_app.run_record.run_folder import (
    COMPLETED,
    RUNNING,
    SUMMARY_FILE,
    read_json,
    read_metrics,
    read_refusals,
    stop_explanation,
)


@dataclass(frozen=True)
class RunRequest:
    """What `oncofed run` was asked: a new run, or (`resume`) the continuation of a run folder."""

    kit: Path
    rounds: int | None
    preset: str | None
    run_config: str
    fab: Path | None
    resume: Path | None
    init: Path | None
    tracking_uri: str | None = None
    """The MLflow server for the run's records (default: a store in the run folder, or the resumed run's own)."""


def run_federation(request: RunRequest) -> None:
    """Submit the run, print its log as it comes, then its per-site results; CommandError when it did not end
    with results (REFUSED when every site refused the app)."""
    console = make_console(highlight=False, soft_wrap=True)
    with stop_on_signals("`flwr run` (the run goes on at the coordinator)"):
        plan = plan_submission(request)
        log_path = plan.run_dir / "logs" / "flwr-run.log"
        config = plan.run_config
        console.print(
            f"{'Resuming' if request.resume else 'Submitting'} {plan.fab.name} (sha256 {plan.app.sha256}): "
            f"{config['num-server-rounds']} rounds ({config.get('model-preset', 'saved')} model, quorum "
            f"{config['min-sites']} of {len(plan.kit.sites)} sites) to {plan.kit.local_address}; run folder "
            f"{plan.run_dir}\n  log: {log_path}; Ctrl-C stops following (the run goes on at the coordinator)",
            markup=False,
        )
        try:
            with errors_as(ExitCode.FAILED, CoordinatorNotRunning, FabError):
                code = submit_run(plan, lambda line: console.print(line, markup=False))
        except KeyboardInterrupt:
            run_id = run_id_in(log_path)
            raise CommandError(
                "stopped following the run; it goes on at the coordinator. Stop it with: "
                f"FLWR_HOME={plan.kit.flwr_home} flwr stop {run_id or 'RUN_ID'} {CONNECTION}",
                ExitCode.INTERRUPTED,
            ) from None
    check_outcome(request, plan, code)
    console.print(site_table(read_metrics(plan.run_dir)))
    console.print(f"Results: {plan.run_dir} (metrics.jsonl, summary.json, models/)", markup=False)


def plan_submission(request: RunRequest) -> RunPlan:
    """The checked plan (BAD_INPUT names what is wrong); a resumed run folder must not be written by a live run."""
    with errors_as(ExitCode.BAD_INPUT, KitError, ValueError):
        kit = read_coordinator_kit(request.kit)
        if request.resume is None:
            rounds, preset = request.rounds or 5, request.preset or "small"
            plan = plan_run(kit, rounds, preset, request.run_config, request.init, request.fab)
        else:
            plan = plan_resume(kit, request.resume, request.rounds, request.run_config, request.fab)
    if request.tracking_uri is not None:
        plan.run_config["tracking-uri"] = request.tracking_uri
    if request.resume is not None and (active := still_running(kit, plan.run_dir)) is not None:
        raise CommandError(busy_run_folder(kit, plan.run_dir, *active), ExitCode.BAD_INPUT)
    return plan


def busy_run_folder(
    kit: CoordinatorKit,
    run_dir: Path,
    run_id: int,
    orphaned_until: dt.datetime | None,
    now: dt.datetime | None = None,
) -> str:
    """Why `--resume run_dir` must wait: Flower run `run_id` still runs in it. One whose ServerApp died with the
    previous coordinator (`orphaned_until`: when Flower will have marked it failed) says how many seconds to wait
    (a few more than the heartbeat window left); another one, how to stop it."""
    if orphaned_until is not None:
        left_s = (orphaned_until - (now or dt.datetime.now(dt.UTC))).total_seconds()
        return (
            f"--resume {run_dir}: {RESTARTED}: Flower still counts its run {run_id} as running until its "
            f"ServerApp's heartbeat is overdue. Try again in {max(math.ceil(left_s), 0) + 5} s"
        )
    return (
        f"--resume {run_dir}: Flower run {run_id} is still writing into it. If its coordinator died, Flower marks it "
        f"failed about a minute after the restart; to stop it now: FLWR_HOME={kit.flwr_home} flwr stop {run_id} "
        f"{CONNECTION}"
    )


def check_outcome(request: RunRequest, plan: RunPlan, code: int) -> None:
    """REFUSED when every site refused the app, FAILED (saying how to go on) unless the run completed."""
    records = read_metrics(plan.run_dir)
    errors = make_console(stderr=True, highlight=False, soft_wrap=True)
    if print_refusals(errors, read_refusals(plan.run_dir)) and not evaluations(records):
        raise CommandError(
            f"no site runs this app (sha256 {plan.app.sha256}): every site refused it. Each site must approve "
            "it first (`oncofed site approve --kit DIR --fab FILE`)",
            ExitCode.REFUSED,
        )
    summary = read_json(plan.run_dir / SUMMARY_FILE)
    resume_hint = f"continue it with `oncofed run --kit {request.kit} --resume {plan.run_dir}`"
    if (stop := stop_explanation(summary)) is not None:
        what, after = stop
        hint = "submit the run again when the sites are online" if after is None else resume_hint
        raise CommandError(f"{what}\n  run folder: {plan.run_dir} ({hint})", ExitCode.FAILED)
    if summary.get("status") == RUNNING:
        done = summary.get("last_round")
        raise CommandError(
            f"the run did not end: the coordinator or the connection to it stopped (flwr run exit code {code}; "
            f"last completed round: {'none' if done is None else done}). When `oncofed coordinator status --kit "
            f"{request.kit}` shows the run interrupted, {resume_hint}",
            ExitCode.FAILED,
        )
    if code != 0 or summary.get("status") != COMPLETED or not evaluations(records):
        outcome = f"flwr run exit code {code}" if code != 0 else "no site sent results"
        if (raised := raised_exception(plan.run_dir / "logs" / "flwr-run.log")) is not None:
            outcome += f"; the ServerApp raised {raised}"
        raise CommandError(
            f"the run did not finish ({outcome}); logs: {plan.run_dir / 'logs' / 'flwr-run.log'}, "
            f"{plan.kit.logs / 'superlink.log'}, and each site's <work-path>/logs/",
            ExitCode.FAILED,
        )
