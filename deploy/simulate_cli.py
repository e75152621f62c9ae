"""`oncofed simulate`: the whole federation on this machine, in Flower's Simulation Engine.

The command reads options, shows progress and maps outcomes to exit codes; the plan
(deploy/simulation_plan.py) and the processes (deploy/simulate.py) load when it runs, with torch and Flower,
never when `oncofed` starts.
"""

from pathlib import Path
from typing import Annotated

import typer

from models.exit_codes import ExitCode, fail

app = typer.Typer()


@app.command("simulate", no_args_is_help=True)
def simulate(
    data: Annotated[
        Path, typer.Option(help="Folder with one sub-folder per site (e.g. from `oncofed synth`).")
    ],
    out: Annotated[
        Path, typer.Option(help="Run folder to create: metrics.jsonl, summary.json, models/, logs/.")
    ],
    rounds: Annotated[int, typer.Option(help="Federated rounds.")] = 5,
    preset: Annotated[str, typer.Option(help="Model preset: tiny | small | large.")] = "small",
    seed: Annotated[
        int, typer.Option(help="Seed for the initial model, the data split and augmentation.")
    ] = 0,
    run_config: Annotated[
        str,
        typer.Option(
            "--run-config",
            help="More run settings as key=value pairs, e.g. 'strategy=\"fedprox\" local-baseline=true'.",
        ),
    ] = "",
) -> None:
    """Run the federation on this machine and print the per-site results.

    Runs in Flower's Simulation Engine, with its own SuperLink on a free loopback port; every Flower process
    it starts is stopped when the run ends, fails or is interrupted.
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
    from deploy.simulate import ROUND_LINE, failure_context, run_simulation
    from deploy.simulation_plan import NotEnoughCases, plan_simulation
    from server_app.run_folder import SUMMARY_FILE, read_metrics
    from server_app.site_table import site_table

    try:
        plan = plan_simulation(data, out, rounds, preset, seed, run_config)
    except NotEnoughCases as error:
        raise fail(str(error), ExitCode.NO_USABLE_DATA) from None
    except (ValueError, SiteDataError, FileNotFoundError) as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None

    console = Console()
    console.print(
        f"Federation of {plan.n_sites} sites from {data}; run folder {plan.run_dir}", highlight=False
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
                done = int(match.group(1)) - 1
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

    if code != 0 or not (plan.run_dir / SUMMARY_FILE).is_file():
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
