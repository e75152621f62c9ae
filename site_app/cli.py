"""`oncofed site report`: the site commands that need only the site's modules (site_app, data_prep, models).

`oncofed_cli` puts them in the `site` group, beside deploy's site_cli (`site start`, `site check`). Torch,
MONAI and the readers load when a command runs, never when `oncofed` starts.
"""

from pathlib import Path
from typing import Annotated

import typer

from models.exit_codes import ExitCode, fail

app = typer.Typer()


@app.command("report", no_args_is_help=True)
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
    """Validate this site's cases and write a site-local report.

    Per-case metrics and overlays, worst case first, into WORKDIR/reports only.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from data_prep.errors import SiteDataError
    from site_app.site_report import write_site_report

    if not work.is_dir():
        raise fail(
            f"work folder {work} does not exist or is not a folder; give the site's work-path",
            ExitCode.BAD_INPUT,
        )
    if model is not None and not model.is_file():
        raise fail(f"model checkpoint {model} does not exist", ExitCode.BAD_INPUT)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("validating cases", total=None)
            files = write_site_report(
                work, model, lambda done, total: progress.update(task, completed=done, total=total)
            )
    except FileNotFoundError as error:  # never validated here, or its last global model is gone
        raise fail(str(error), ExitCode.NO_USABLE_DATA) from None
    except SiteDataError as error:  # the data folder the site validated on is gone
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    failed = f", {files.n_failed} could not be validated (listed in the report)" if files.n_failed else ""
    Console().print(
        f"{files.n_cases} cases{failed}\nReport (stays at this site): {files.html}\nPer case: {files.csv}",
        highlight=False,
        soft_wrap=True,
    )
