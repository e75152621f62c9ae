"""The coordinator's launcher commands (`oncofed simulate`)."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from data_prep.discovery import discover_cases
from data_prep.errors import SiteDataError
from deploy.processes import sigterm_as_interrupt
from deploy.simulate import ROUND_LINE, SimulationPlan, app_directory, failure_context, run_simulation
from models.presets import get_preset
from server_app.run_folder import METRICS_FILE, SUMMARY_FILE, read_metrics
from server_app.site_table import site_table
from site_app.site_config import site_folders

console = Console()
errors = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


SIMULATION_KEYS = {"seed", "patch-size", "min-sites", "sim-data", "sim-work"}
"""Run settings `simulate` chooses itself (from --seed, --preset and the data folder)."""


def plan_simulation(
    data: Path, out: Path, rounds: int, preset: str, seed: int, overrides: str = ""
) -> SimulationPlan:
    """Check every input before a process starts; each problem is one clear sentence (ValueError/SiteDataError).

    `overrides`: more run settings as `key=value` pairs (--run-config), e.g. 'strategy="fedprox" local-norm=true'."""
    from deploy.federated_run import RESERVED_KEYS, run_config_overrides

    model = get_preset(preset)
    extra = run_config_overrides(overrides, RESERVED_KEYS | SIMULATION_KEYS)
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
    sites = site_folders(data)
    if not sites:
        raise SiteDataError(
            f"federation data folder {data} holds no site folders (one sub-folder per site expected)"
        )
    for site in sites:
        n_cases = len(discover_cases(site))
        if n_cases < 2:
            raise SiteDataError(
                f"site folder {site} has {n_cases} case; at least 2 are needed (train + validate)"
            )
    if (out / METRICS_FILE).exists():
        raise ValueError(f"run folder {out} already holds a run; choose a new --out")
    return SimulationPlan(
        app_dir=app_directory(),
        run_dir=out.resolve(),
        n_sites=len(sites),
        run_config={
            "num-server-rounds": rounds,
            "model-preset": preset,
            "patch-size": model.patch_size,
            "seed": seed,
            "min-sites": len(sites),
            "run-dir": str(out.resolve()),
            "sim-data": str(data.resolve()),
            "sim-work": str((out / "sites").resolve()),
            **extra,
        },
    )


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
    """Run the federation on this machine in Flower's Simulation Engine and print the per-site results."""
    try:
        plan = plan_simulation(data, out, rounds, preset, seed, run_config)
    except (ValueError, SiteDataError, FileNotFoundError) as error:
        raise fail(str(error)) from None

    console.print(f"Federation of {plan.n_sites} sites from {data}; run folder {plan.run_dir}")
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
            raise fail(str(error), code=1) from None
        if code == 0:
            progress.update(task, completed=rounds, description="done")

    if code != 0 or not (plan.run_dir / SUMMARY_FILE).is_file():
        raise fail(
            f"the run did not finish (flwr run exit code {code}); Flower's logs are in "
            f"{plan.run_dir / 'logs'}\n{failure_context(plan.run_dir)}",
            code=1,
        )
    console.print(site_table(read_metrics(plan.run_dir)))
    console.print(f"Results: {plan.run_dir} (metrics.jsonl, summary.json, models/best.pt, models/final.pt)")
