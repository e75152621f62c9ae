"""`oncofed simulate`: the whole federation on this machine, in Flower's Simulation Engine.

The command reads its options and calls deploy/simulation/simulate.py, which loads with torch and Flower when the
command runs, never when `oncofed` starts.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer

from deploy.run_options import TrackingUriOption
from models.shared.exit_codes import reports_errors

if TYPE_CHECKING:
    from deploy.simulation.simulate import NewSimulation

app = typer.Typer()


@app.command("simulate", no_args_is_help=True)
@reports_errors
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
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Run the federation on this machine and print the per-site results.

    Runs in Flower's Simulation Engine, with its own SuperLink on a free loopback port; every Flower process
    it starts is stopped when the run ends, fails or is interrupted. The quorum (`min-sites`) is a majority
    of the sites; `--resume RUN_DIR` continues a run that stopped, after its last completed round.
    """
    from deploy.simulation.simulate import simulate_federation

    simulate_federation(simulation_request(data, out, rounds, preset, seed, run_config, resume), tracking_uri)


def simulation_request(
    data: Path | None,
    out: Path | None,
    rounds: int,
    preset: str,
    seed: int,
    run_config: str,
    resume: Path | None,
) -> "NewSimulation | Path":
    """A new simulation (`--data` and `--out`), or the run folder to continue (`--resume`, alone)."""
    from deploy.simulation.simulate import NewSimulation

    if resume is not None:
        if data is not None or out is not None or run_config:
            raise click.UsageError(
                "--resume continues a run folder with its own data and settings: leave out --data, --out and"
                " --run-config"
            )
        return resume
    if data is None or out is None:
        raise click.UsageError("give --data and --out (or --resume RUN_DIR)")
    return NewSimulation(data, out, rounds, preset, seed, run_config)
