"""`oncofed report RUN_DIR [--out FILE]`: the federation report of a run folder, on demand.

The ServerApp writes the same report at the end of every run; this command rebuilds it from the run folder
alone (e.g. after an interrupted run, or into another file).
"""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from server_app.report_files import write_report

EXIT_NO_RUN = 2
"""Exit code when RUN_DIR holds no validated round."""


def report(
    run_dir: Annotated[
        Path, typer.Argument(help="Run folder (holds metrics.jsonl) of `oncofed simulate` or a deployed run.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="HTML file to write (default RUN_DIR/report.html); report.json and metrics.csv go beside it."
        ),
    ] = None,
) -> None:
    """Write the federation report: one self-contained HTML page, report.json and metrics.csv."""
    console, errors = Console(), Console(stderr=True)
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=errors,
            transient=True,
        ) as progress:
            progress.add_task(f"writing the report of {run_dir}", total=None)
            files = write_report(run_dir, out)
    except FileNotFoundError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_NO_RUN) from None
    console.print(f"Report: {files.html}\nData: {files.json}, {files.csv}", highlight=False, soft_wrap=True)
