"""`oncofed report RUN_DIR [--out FILE]`: the federation report of a run folder, on demand.

The ServerApp writes the same report at the end of every run; this command rebuilds it from the run folder
alone (e.g. after an interrupted run, or into another file). The report modules (matplotlib, torch through the
run folder) load when the command runs, never when `oncofed` starts.
"""

from pathlib import Path
from typing import Annotated

import typer

from models.shared.exit_codes import ExitCode, fail

app = typer.Typer()


@app.command("report", no_args_is_help=True)
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
    """(Re)write a run folder's federation report.

    One self-contained HTML page, with report.json and metrics.csv beside it.
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from models.shared.terminal import make_console
    from server_app.report.writer import write_report

    if not run_dir.is_dir():
        raise fail(f"run folder {run_dir} does not exist or is not a folder", ExitCode.BAD_INPUT)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=make_console(stderr=True), transient=True) as progress:
            progress.add_task(f"writing the report of {run_dir}", total=None)
            files = write_report(run_dir, out)
    except FileNotFoundError as error:  # no validated round in the folder
        raise fail(str(error), ExitCode.NO_USABLE_DATA) from None
    make_console().print(
        f"Report: {files.html}\nData: {files.json}, {files.csv}", highlight=False, soft_wrap=True
    )
