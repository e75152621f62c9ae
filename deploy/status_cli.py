"""`oncofed coordinator status --kit DIR`: every site by name (online, offline, last seen, revoked) and every run
with its state and current round."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()
errors = Console(stderr=True)

SITE_STYLE = {"online": "green", "offline": "yellow", "revoked": "red", "not registered": "red"}
RUN_STYLE = {
    "completed": "green",
    "running": "cyan",
    "stopped": "yellow",
    "interrupted": "yellow",
    "failed": "red",
}


def coordinator_status(
    kit: Annotated[Path, typer.Option("--kit", help="The coordinator kit folder `oncofed provision` wrote.")],
) -> None:
    """List the federation's sites (online, offline, last seen, revoked) and its runs (state, current round)."""
    from deploy.coordinator_status import flower_runs, run_states, site_states
    from deploy.federated_run import CoordinatorNotRunning
    from deploy.kit import KitError, read_coordinator_kit

    try:
        coordinator = read_coordinator_kit(kit)
    except KitError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        sites, flower = site_states(coordinator), flower_runs(coordinator)
    except CoordinatorNotRunning as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None

    table = Table(title=f"Sites of federation {coordinator.federation!r}")
    for column in ("site", "status", "last seen", "node"):
        table.add_column(column)
    for site in sites:
        style = SITE_STYLE.get(site.status, "")
        status = f"[{style}]{site.status}[/]" if style else site.status
        table.add_row(site.site, status, site.last_seen, "" if site.node_id is None else str(site.node_id))
    console.print(table)

    runs = run_states(coordinator, flower)
    table = Table(title=f"Runs in {coordinator.runs}")
    for column in ("run folder", "state", "round", "Flower run", "note"):
        table.add_column(column, overflow="fold")
    for run in runs:
        style = RUN_STYLE.get(run.state, "")
        flower_run = f"{run.flower_run_id} ({run.flower_status})" if run.flower_run_id else run.flower_status
        table.add_row(
            run.folder.name,
            f"[{style}]{run.state}[/]" if style else run.state,
            run.round,
            flower_run,
            run.note,
        )
    console.print(table if runs else "No runs yet.")
