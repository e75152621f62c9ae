"""`oncofed report RUN_DIR [--out FILE]`: the federation report of a run folder, on demand.

The ServerApp writes the same report at the end of every run; this command rebuilds it from the run folder
alone (e.g. after an interrupted run, or into another file): server_app/report/writer.py's `rebuild_report`. The
report modules (matplotlib, torch through the run folder) load when the command runs, never when `oncofed` starts.
"""

from pathlib import Path
from typing import Annotated

import typer

from models.shared.exit_codes import reports_errors

app = typer.Typer()


@app.command("report", no_args_is_help=True)
@reports_errors
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
    from server_app.report.writer import rebuild_report

    rebuild_report(run_dir, out)
