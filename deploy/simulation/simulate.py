"""`oncofed simulate` from checked options to the per-site table: plan the run, run it with a progress bar, stop
it on Ctrl-C or SIGTERM, and read its outcome. Whatever is not a finished run leaves as a CommandError with its exit
code (models/shared/exit_codes.py).
"""

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from data_prep.errors import SiteDataError
from deploy.processes import stop_on_signals
from deploy.simulation.launch import ROUND_LINE, SimulationPlan, failure_summary, run_simulation
from deploy.simulation.plan import NotEnoughCases, plan_resumed_simulation, plan_simulation
from models.shared.exit_codes import CommandError, ExitCode, errors_as
from models.shared.terminal import make_console
from server_app.report.site_table import evaluations, site_table
from server_app.run_record.run_folder import (
    COMPLETED,
    SUMMARY_FILE,
    read_json,
    read_metrics,
    stop_explanation,
)


@dataclass(frozen=True)
class NewSimulation:
    """A simulation of the sites in `data` into the new run folder `out`."""

    data: Path
    out: Path
    rounds: int
    preset: str
    seed: int
    run_config: str
    """More run settings, as `key=value` pairs."""


def simulate_federation(request: NewSimulation | Path, tracking_uri: str | None = None) -> None:
    """Run a new simulation, or continue the one in the run folder `request`, and print the per-site results
    (`tracking_uri`: the MLflow server for the run's records, instead of the run's own). Every process it started
    is stopped when it ends, fails, or at the first Ctrl-C or SIGTERM."""
    console = make_console()
    with stop_on_signals("the simulation and every Flower process it started"):
        try:
            plan = plan_run(request)
            if tracking_uri is not None:
                plan.run_config["tracking-uri"] = tracking_uri
        except KeyboardInterrupt:
            raise CommandError("interrupted before the simulation started", ExitCode.INTERRUPTED) from None
        console.print(
            f"Federation of {plan.n_sites} sites from {plan.run_config['sim-data']}; run folder {plan.run_dir}"
            + (" (resumed)" if isinstance(request, Path) else ""),
            highlight=False,
        )
        try:
            with errors_as(ExitCode.FAILED, RuntimeError, TimeoutError):
                code = run_with_progress(plan, console)
        except KeyboardInterrupt:
            raise CommandError(
                f"interrupted; every Flower process it started was stopped. Partial results: {plan.run_dir}",
                ExitCode.INTERRUPTED,
            ) from None
    check_outcome(plan, code)
    console.print(site_table(read_metrics(plan.run_dir)))
    console.print(
        f"Results: {plan.run_dir} (metrics.jsonl, summary.json, models/best.pt, models/final.pt)",
        highlight=False,
    )


def plan_run(request: NewSimulation | Path) -> SimulationPlan:
    """The checked plan: a site with too few cases is NO_USABLE_DATA, any other bad input BAD_INPUT."""
    with (
        errors_as(ExitCode.BAD_INPUT, ValueError, SiteDataError, FileNotFoundError),
        errors_as(ExitCode.NO_USABLE_DATA, NotEnoughCases),
    ):
        if isinstance(request, Path):
            return plan_resumed_simulation(request)
        return plan_simulation(
            request.data, request.out, request.rounds, request.preset, request.seed, request.run_config
        )


def run_with_progress(plan: SimulationPlan, console: Console) -> int:
    """Run the plan with a progress bar that follows the ServerApp's round lines; `flwr run`'s exit code."""
    rounds = int(plan.run_config["num-server-rounds"])
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("starting Flower, validating the initial model", total=rounds)

        def on_line(line: str) -> None:
            if match := ROUND_LINE.search(line):
                done = max(int(match.group(1)) - 1, 0)
                progress.update(task, completed=done, description=f"round {match.group(1)}/{match.group(2)}")

        code = run_simulation(plan, on_line)
        if code == 0:
            progress.update(task, completed=rounds, description="done")
    return code


def check_outcome(plan: SimulationPlan, code: int) -> None:
    """FAILED, saying why, unless the run completed every round with validation results."""
    summary = read_json(plan.run_dir / SUMMARY_FILE)
    if (stop := stop_explanation(summary)) is not None:
        what, after = stop
        hint = "" if after is None else f"; continue it with `oncofed simulate --resume {plan.run_dir}`"
        raise CommandError(what + hint, ExitCode.FAILED)
    if code != 0 or summary.get("status") != COMPLETED or not evaluations(read_metrics(plan.run_dir)):
        raise CommandError(
            f"the run did not finish (flwr run exit code {code}); {failure_summary(plan.run_dir)}",
            ExitCode.FAILED,
        )
