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
from models.federation_settings import RESUME, majority
from models.presets import get_preset
from server_app.run_folder import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, read_json, read_metrics
from server_app.site_table import evaluations, site_table
from site_app.site_config import site_folders

console = Console()
errors = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def plan_simulation(data: Path, out: Path, rounds: int, preset: str, seed: int) -> SimulationPlan:
    """Check every input before a process starts; each problem is one clear sentence (ValueError/SiteDataError)."""
    model = get_preset(preset)
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
            "min-sites": majority(len(sites)),
            "expected-sites": ",".join(site.name for site in sites),
            "run-dir": str(out.resolve()),
            "sim-data": str(data.resolve()),
            "sim-work": str((out / "sites").resolve()),
        },
    )


def plan_resumed_simulation(run_dir: Path) -> SimulationPlan:
    """Continue a simulation in its run folder, after its checkpoint's round, with its saved settings."""
    run_config = read_json(run_dir / CONFIG_FILE).get("run_config")
    if not run_config or not run_config.get("sim-data"):
        raise ValueError(
            f"--resume {run_dir}: not the run folder of a simulation (no config.json naming sim-data)"
        )
    if not (run_dir / "state" / "checkpoint.pt").is_file():
        raise ValueError(
            f"--resume {run_dir}: no round checkpoint (state/checkpoint.pt): the run stopped before its first "
            "round ended; start a new simulation instead"
        )
    if read_json(run_dir / SUMMARY_FILE).get("status") == "completed":
        raise ValueError(f"--resume {run_dir}: the run completed all its rounds; nothing to resume")
    sites = [s for s in str(run_config.get("expected-sites", "")).split(",") if s]
    return SimulationPlan(
        app_dir=app_directory(),
        run_dir=run_dir.resolve(),
        n_sites=len(sites) or len(site_folders(Path(run_config["sim-data"]))),
        run_config={**run_config, RESUME.key: True},
    )


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
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume", help="Continue this simulation's run folder after its last completed round."
        ),
    ] = None,
) -> None:
    """Run the federation on this machine in Flower's Simulation Engine and print the per-site results."""
    try:
        if resume is not None:
            if data is not None or out is not None:
                raise ValueError(
                    "--resume continues a run folder with its own data: leave out --data and --out"
                )
            plan = plan_resumed_simulation(resume)
        elif data is None or out is None:
            raise ValueError("give --data and --out (or --resume RUN_DIR)")
        else:
            plan = plan_simulation(data, out, rounds, preset, seed)
    except (ValueError, SiteDataError, FileNotFoundError) as error:
        raise fail(str(error)) from None
    rounds = int(plan.run_config["num-server-rounds"])

    console.print(
        f"Federation of {plan.n_sites} sites from {plan.run_config['sim-data']}; run folder {plan.run_dir}"
        + (" (resumed)" if resume is not None else "")
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
            raise fail(str(error), code=1) from None
        if code == 0:
            progress.update(task, completed=rounds, description="done")

    summary = read_json(plan.run_dir / SUMMARY_FILE)
    if summary.get("status") in ("stopped", "failed"):
        stopped = summary.get("stopped") or {}
        after = stopped.get("after_round")
        raise fail(
            f"the run {summary['status']} {'before its first round' if after is None else f'after round {after}'}: "
            f"{stopped.get('reason')}"
            + ("" if after is None else f"; continue it with `oncofed simulate --resume {plan.run_dir}`"),
            code=1,
        )
    if code != 0 or summary.get("status") != "completed" or not evaluations(read_metrics(plan.run_dir)):
        raise fail(
            f"the run did not finish (flwr run exit code {code}); Flower's logs are in "
            f"{plan.run_dir / 'logs'}\n{failure_context(plan.run_dir)}",
            code=1,
        )
    console.print(site_table(read_metrics(plan.run_dir)))
    console.print(f"Results: {plan.run_dir} (metrics.jsonl, summary.json, models/best.pt, models/final.pt)")
