"""A site's commands that need its kit: `oncofed site setup`, `oncofed site start` and `oncofed site check` (the
site's approvals and key: deploy/site/approval_cli.py).

Each reads its options and calls one function: deploy/site/setup.py, deploy/site/site_check.py,
deploy/site/joining.py. `oncofed_cli` puts
these in the `site` group beside site_app's commands. The kit, TLS and data modules load when a command runs, never
when `oncofed` starts.
"""

from enum import Enum
from pathlib import Path
from typing import Annotated

import click
import typer

from models.shared.exit_codes import reports_errors

app = typer.Typer()

SiteKitOption = Annotated[
    Path, typer.Option("--kit", help="The site kit folder (`oncofed provision` wrote it).")
]


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


@app.command("check", no_args_is_help=True)
@reports_errors
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
    if kit is None and (data is None or work is None):
        raise click.UsageError("give --kit, or both --data and --work")
    from deploy.site.site_check import check_site

    check_site(kit, data, work, manifest, config, output_format is OutputFormat.json)


@app.command("setup", no_args_is_help=True)
@reports_errors
def site_setup(
    kit: SiteKitOption,
    data: Annotated[
        Path | None, typer.Option("--data", help="The folder with the site's studies (only read).")
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key", help="The site's private key (default: site.key in the keys folder beside the kit)."
        ),
    ] = None,
    work: Annotated[
        Path | None, typer.Option("--work", help="Where OncoFed writes (default: work/ beside the kit).")
    ] = None,
) -> None:
    """Set up a site from its kit: the data folder, the key and the work folder into site.toml (asked for on a
    terminal when not given), then every `site check` test, the first cases found and what was excluded and why.

    Exit 0 when the site is ready, 3 if an answer or a check is wrong, 4 if no case is usable.
    """
    import sys

    from deploy.site.setup import set_up_site

    ask = (lambda question, default: typer.prompt(question, default=default)) if sys.stdin.isatty() else None
    set_up_site(kit, data, key, work, ask)


@app.command("start", no_args_is_help=True)
@reports_errors
def site_start(kit: SiteKitOption) -> None:
    """Check the kit, then connect this site to the coordinator.

    A Flower SuperNode (outbound HTTPS only, with the site's own key from site.toml) and the site's gate, the
    only process that launches apps here, and only those approved in `approved-apps.toml`. In the foreground
    until Ctrl-C or SIGTERM (the first stops it within seconds, a second at once; exit 0). Says when the
    coordinator is lost and when it answers again (Flower keeps retrying). Exit 5 (refused) when the coordinator
    does not accept this site's key (not registered, or revoked).
    """
    from deploy.site.joining import join_federation

    join_federation(kit)
