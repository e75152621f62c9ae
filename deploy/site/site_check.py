"""`oncofed site check`: the site kit's pre-flight (deploy/site/preflight.py), then the data check
(site_app/tools/data_check.py): every case usable or excluded with its reason, into WORKDIR/inventory.json."""

import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from deploy.kits.contents import SITE_FILE, read_site_kit
from deploy.site.preflight import CheckResult, check_kit
from models.shared.exit_codes import CommandError, ExitCode, errors_as
from models.shared.terminal import make_console
from site_app.tools.data_check import DataCheck, DataCheckError, check_site_data, print_report


def check_site(
    kit: Path | None,
    data: Path | None,
    work: Path | None,
    manifest: Path | None,
    config: Path | None,
    as_json: bool,
) -> None:
    """Check the kit (when given: its data, work folder and site.toml are the defaults), then the data; the
    report goes to stdout (a table, or with `as_json` the inventory). BAD_INPUT when a kit check or an input
    fails, NO_USABLE_DATA when no case is usable."""
    if kit is not None:
        results = check_kit(kit)
        print_checks(results, make_console(stderr=as_json))
        failed = [result for result in results if result.status == "error"]
        if failed:
            raise CommandError(
                f"{len(failed)} check(s) of the site kit {kit} failed (see the table)", ExitCode.BAD_INPUT
            )
        settings = read_site_kit(kit).settings
        data, work = data or settings.data_path, work or settings.work_path
        config = config or kit / SITE_FILE
    if data is None or work is None:
        raise ValueError("check_site needs a kit, or both a data and a work folder")
    check = check_data(data, work, manifest, config)
    if as_json:
        print(json.dumps(check.inventory.to_json(), indent=1))
    else:
        print_report(make_console(soft_wrap=True), check)
    if not check.inventory.usable:
        raise CommandError(
            f"no usable case in {data}; {check.path} says why each case was excluded", ExitCode.NO_USABLE_DATA
        )


def check_data(data: Path, work: Path, manifest: Path | None, config: Path | None) -> DataCheck:
    """The data check with a progress bar on stderr (when it is a terminal)."""
    err = make_console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with (
        errors_as(ExitCode.BAD_INPUT, DataCheckError),
        Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress,
    ):
        task = progress.add_task("checking cases", total=None)
        return check_site_data(
            data,
            work,
            manifest,
            config,
            lambda done, total: progress.update(task, completed=done, total=total),
        )


def print_checks(results: list[CheckResult], out: Console) -> None:
    """The kit's pre-flight as a table: check, result, details."""
    table = Table("check", "result", "details", show_lines=False)
    style = {"ok": "green", "warning": "yellow", "error": "bold red"}
    for result in results:  # messages name files and TOML tables: text, never markup
        table.add_row(result.check, Text(result.status, style[result.status]), Text(result.message))
    out.print(table)
