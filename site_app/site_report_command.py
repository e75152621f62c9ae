"""`oncofed site report --work WORKDIR [--model MODEL.pt]`: the site-local validation report.

Run at the hospital, on the site's own work folder; the report is written into that folder only.
"""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from site_app.site_report import write_site_report

EXIT_NOTHING_TO_REPORT = 2
"""Exit code when the work folder has never validated a model, or the model file is missing."""


def site_report(
    work: Annotated[
        Path,
        typer.Option(
            help="The site's work folder (node config `work-path`); the report is "
            "written into WORKDIR/reports."
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option(
            help="Model checkpoint to validate (default: the last global model "
            "this site validated, WORKDIR/models/global-latest.pt)."
        ),
    ] = None,
) -> None:
    """Validate the site's own validation cases and write a per-case report with overlays, worst case first."""
    console, errors = Console(), Console(stderr=True)
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=errors,
            transient=True,
        ) as progress:
            task = progress.add_task("validating cases", total=None)
            files = write_site_report(
                work, model, lambda done, total: progress.update(task, completed=done, total=total)
            )
    except FileNotFoundError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_NOTHING_TO_REPORT) from None
    failed = f", {files.n_failed} could not be validated (listed in the report)" if files.n_failed else ""
    console.print(
        f"{files.n_cases} cases{failed}\nReport (stays at this site): {files.html}\nPer case: {files.csv}",
        highlight=False,
        soft_wrap=True,
    )
