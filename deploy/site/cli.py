"""A site's commands that need its kit: `oncofed site start` and `oncofed site check` (the site's approvals and
key: deploy/site/approval_cli.py).

`site check` joins the kit's pre-flight (deploy/site/preflight.py) with the data check (site_app/tools/data_check.py);
`site start` runs the SuperNode and the site's gate in the foreground (what systemd and Docker expect): Ctrl-C
or SIGTERM stops them, with their children, and exits OK. `oncofed_cli` puts these in the `site` group beside site_app's commands.
The kit, TLS and data modules load when a command runs, never when `oncofed` starts.
"""

import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer

from models.shared.exit_codes import ExitCode, fail

if TYPE_CHECKING:
    from rich.console import Console

    from deploy.site.preflight import CheckResult

app = typer.Typer()

SiteKitOption = Annotated[
    Path, typer.Option("--kit", help="The site kit folder (`oncofed provision` wrote it).")
]
NOT_FATAL_AT_START = {"connection-refused", "timeout", "name-unresolved", "unreachable"}
"""Coordinator not reachable yet: the SuperNode keeps trying, so `site start` goes on."""


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


@app.command("check", no_args_is_help=True)
def site_check(
    kit: Annotated[
        Path | None,
        typer.Option(
            "--kit",
            help="The site kit: checks the kit, the key, the coordinator "
            "over TLS and the Flower version, then the data it names.",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="The site's data folder (only read); default: the kit's data-path."),
    ] = None,
    work: Annotated[
        Path | None,
        typer.Option(
            "--work", help="The site's work folder (inventory.json goes here); default: the kit's work-path."
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            help="CSV with columns case_id,image,label (paths relative to --data), for folders not "
            "organised by case.",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="site.toml with [series], [labels], [limits]; default: the kit's site.toml."
        ),
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="text: a table; json: the inventory on stdout.")
    ] = OutputFormat.text,
) -> None:
    """Check a site's kit and data before it joins.

    With --kit: the kit's files, key, CA, the coordinator over TLS and the Flower version; then every case of
    the data, usable or excluded with its reason, into WORKDIR/inventory.json.

    Exit 0 if a case is usable, 3 if a kit check or an input is wrong, 4 if no case is usable.
    """
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from models.shared.terminal import make_console

    as_json = output_format is OutputFormat.json
    if kit is not None:
        from deploy.kits.contents import SITE_FILE, read_site_kit
        from deploy.site.preflight import check_kit

        results = check_kit(kit)
        print_checks(results, make_console(stderr=as_json))
        failed = [result for result in results if result.status == "error"]
        if failed:
            raise fail(
                f"{len(failed)} check(s) of the site kit {kit} failed (see the table)", ExitCode.BAD_INPUT
            )
        settings = read_site_kit(kit).settings
        data, work = data or settings.data_path, work or settings.work_path
        config = config or kit / SITE_FILE
    if data is None or work is None:
        raise click.UsageError("give --kit, or both --data and --work")
    from site_app.tools.data_check import DataCheckError, check_site_data, print_report

    err = make_console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
            task = progress.add_task("checking cases", total=None)
            check = check_site_data(
                data,
                work,
                manifest,
                config,
                lambda done, total: progress.update(task, completed=done, total=total),
            )
    except DataCheckError as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    if as_json:
        typer.echo(json.dumps(check.inventory.to_json(), indent=1))
    else:
        print_report(make_console(soft_wrap=True), check)
    if not check.inventory.usable:
        raise fail(
            f"no usable case in {data}; {check.path} says why each case was excluded", ExitCode.NO_USABLE_DATA
        )


def print_checks(results: list["CheckResult"], out: "Console") -> None:
    """The kit's pre-flight as a table: check, result, details."""
    from rich.table import Table
    from rich.text import Text

    table = Table("check", "result", "details", show_lines=False)
    style = {"ok": "green", "warning": "yellow", "error": "bold red"}
    for result in results:  # messages name files and TOML tables: text, never markup
        table.add_row(result.check, Text(result.status, style[result.status]), Text(result.message))
    out.print(table)


@app.command("start", no_args_is_help=True)
def site_start(kit: SiteKitOption) -> None:
    """Check the kit, then connect this site to the coordinator.

    A Flower SuperNode (outbound HTTPS only, with the site's own key from site.toml) and the site's gate, the
    only process that launches apps here, and only those approved in `approved-apps.toml`. In the foreground
    until Ctrl-C or SIGTERM. Says when the coordinator is lost and when it answers again (Flower keeps
    retrying). Exit 5 (refused) when the coordinator does not accept this site's key (not registered, or
    revoked).
    """
    from rich.text import Text

    from deploy.kits.contents import read_site_kit
    from deploy.processes import sigterm_as_interrupt
    from deploy.site.launcher import SiteStartError, connect, record_session, wait_for_exit
    from deploy.site.link import LinkWatch
    from deploy.site.preflight import check_kit
    from models.shared.terminal import make_console

    console, errors = (
        make_console(highlight=False, soft_wrap=True),
        make_console(stderr=True, highlight=False, soft_wrap=True),
    )
    results = check_kit(kit)
    fatal = [r for r in results if r.status == "error" and r.problem not in NOT_FATAL_AT_START]
    for result in results:
        if result.status != "ok":
            errors.print(Text.assemble((f"{result.check}:", "yellow"), " ", result.message))
    if fatal:
        raise fail(f"site not started: {fatal[0].message}", ExitCode.BAD_INPUT)
    site = read_site_kit(kit)
    with sigterm_as_interrupt():
        console.print(
            f"Site {site.site_name!r} (federation {site.federation!r}) connecting to {site.settings.coordinator}\n"
            f"  logs: {site.logs / 'supernode.log'} (Flower), {site.logs / 'gate.log'} (apps run or refused), "
            f"{site.logs / 'site.log'} (training, validation)\n"
            f"  runs only apps approved in {site.allow_list} (`oncofed site apps --kit {site.root}`)\n"
            f"  stop: Ctrl-C, or kill {os.getpid()} (systemd: systemctl stop oncofed-site)",
            markup=False,
        )
        running = None
        try:
            running, node_id = connect(site, lambda line: console.print(line, markup=False))
            if node_id is None:
                console.print("  still connecting; Flower keeps trying (see the log)")
            else:
                console.print(f"  connected to the coordinator as node {node_id}")
            # Follow the SuperNode's log until it exits: losing and regaining the coordinator is said here
            watch = LinkWatch(
                site.settings.coordinator, lambda text: console.print(f"  {text}", markup=False)
            )
            raise wait_for_exit(site, running, connected=node_id is not None, on_line=watch.line)
        except SiteStartError as error:
            refused = error.problem in ("key-refused", "unregistered")
            raise fail(f"site stopped: {error}", ExitCode.REFUSED if refused else ExitCode.FAILED) from None
        except KeyboardInterrupt:
            console.print("Stopping the site.")
        finally:
            if running is not None:
                running.stop()
                record_session(site, "stopped")
