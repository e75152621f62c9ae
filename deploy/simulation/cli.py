"""`oncofed simulate`: the whole federation on this machine, in Flower's Simulation Engine.

The command reads options, shows progress and maps outcomes to exit codes; the plan
(deploy/simulation/plan.py) and the processes (deploy/simulation/launch.py) load when it runs, with torch and Flower,
never when `oncofed` starts.
"""

from pathlib import Path
from typing import Annotated

import click
import typer

from models.shared.exit_codes import ExitCode, fail

app = typer.Typer()


@app.command("simulate", no_args_is_help=True)
def simulate(
    data: Annotated[
        Path | None, typer.Option(help="Folder with one sub-folder per site (e.g. from `oncofed synth`).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run folder to create: metrics.jsonl, summary.json, models/, logs/.")
    ] = None,
    rounds: Annotated[int, typer.Option(help="Federated rounds.")] = 5,
    preset: Annotated[str, typer.Option(help="Model preset: tiny | small | large.")] = "small",
    seed: Annotated[
        int, typer.Option(help="Seed for the initial model, the data split and augmentation.")
    ] = 0,
    run_config: Annotated[
        str,
        typer.Option(
            "--run-config",
            help="More run settings as 'key=value' pairs, e.g. 'local-epochs=1 sim-min-train-cases=1' or "
            "'strategy=\"fedprox\" local-baseline=true' "
            "(keys of [tool.flwr.app.config]).",
        ),
    ] = "",
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume", help="Continue this simulation's run folder after its last completed round."
        ),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            help="MLflow tracking server for the run's records (run setting tracking-uri; default: an MLflow "
            "store in the run folder, or the resumed run's own).",
        ),
    ] = None,
) -> None:
    """Run the federation on this machine and print the per-site results.

    Runs in Flower's Simulation Engine, with its own SuperLink on a free loopback port; every Flower process
    it starts is stopped when the run ends, fails or is interrupted. The quorum (`min-sites`) is a majority
    of the sites; `--resume RUN_DIR` continues a run that stopped, after its last completed round.
    """
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
    from deploy.processes import sigterm_as_interrupt
    from deploy.simulation.launch import ROUND_LINE, failure_context, run_simulation
    from deploy.simulation.plan import NotEnoughCases, plan_resumed_simulation, plan_simulation
    from server_app.report.site_table import evaluations, site_table
    from server_app.run_record.run_folder import (
        COMPLETED,
        SUMMARY_FILE,
        read_json,
        read_metrics,
        stop_explanation,
    )

    if resume is not None and (data is not None or out is not None or run_config):
        raise click.UsageError(
            "--resume continues a run folder with its own data and settings: leave out --data, --out and"
            " --run-config"
        )
    if resume is None and (data is None or out is None):
        raise click.UsageError("give --data and --out (or --resume RUN_DIR)")
    try:
        if resume is not None:
            plan = plan_resumed_simulation(resume)
        else:
            plan = plan_simulation(data, out, rounds, preset, seed, run_config)
    except NotEnoughCases as error:
        raise fail(str(error), ExitCode.NO_USABLE_DATA) from None
    except (ValueError, SiteDataError, FileNotFoundError) as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    if tracking_uri is not None:
        plan.run_config["tracking-uri"] = tracking_uri

    rounds = int(plan.run_config["num-server-rounds"])
    console = Console()
    console.print(
        f"Federation of {plan.n_sites} sites from {plan.run_config['sim-data']}; run folder {plan.run_dir}"
        + (" (resumed)" if resume is not None else ""),
        highlight=False,
    )
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with sigterm_as_interrupt(), Progress(*columns, console=console) as progress:
        task = progress.add_task("starting Flower, validating the initial model", total=rounds)

        def on_line(line: str) -> None:
            if match := ROUND_LINE.search(line):
                done = max(int(match.group(1)) - 1, 0)
                progress.update(task, completed=done, description=f"round {match.group(1)}/{match.group(2)}")

        try:
            code = run_simulation(plan, on_line)
        except (RuntimeError, TimeoutError) as error:
            raise fail(str(error), ExitCode.FAILED) from None
        except KeyboardInterrupt:
            raise fail(
                f"interrupted; every Flower process it started was stopped. Partial results: {plan.run_dir}",
                ExitCode.INTERRUPTED,
            ) from None
        if code == 0:
            progress.update(task, completed=rounds, description="done")

    summary = read_json(plan.run_dir / SUMMARY_FILE)
    if (stop := stop_explanation(summary)) is not None:
        what, after = stop
        hint = "" if after is None else f"; continue it with `oncofed simulate --resume {plan.run_dir}`"
        raise fail(what + hint, ExitCode.FAILED)
    if code != 0 or summary.get("status") != COMPLETED or not evaluations(read_metrics(plan.run_dir)):
        raise fail(
            f"the run did not finish (flwr run exit code {code}); Flower's logs are in "
            f"{plan.run_dir / 'logs'}\n{failure_context(plan.run_dir)}",
            ExitCode.FAILED,
        )
    console.print(site_table(read_metrics(plan.run_dir)))
    console.print(
        f"Results: {plan.run_dir} (metrics.jsonl, summary.json, models/best.pt, models/final.pt)",
        highlight=False,
    )
