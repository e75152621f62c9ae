"""``oncofed site check``: build the site inventory and say, case by case, what is usable and why not.

Reads the data folder only; writes ``inventory.json`` into the work folder (atomically). Progress and errors go
to stderr; the report (a table, or the inventory as JSON) to stdout. Exit codes: 0 at least one case is usable,
2 none is, 1 usage error (a missing folder, a bad site.toml or manifest, a work folder inside the data folder).
"""

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from data_prep.discovery import Discovery, discover
from data_prep.errors import SiteDataError
from data_prep.ingest_settings import IngestSettings
from data_prep.inventory import Inventory, build_inventory, write_inventory
from data_prep.manifest import read_manifest
from site_app.site_settings import SiteSettingsError, read_site_settings

EXIT_USABLE = 0
EXIT_USAGE = 1
EXIT_NONE_USABLE = 2

REPORT_WIDTH = 160
"""Columns of the table when stdout is a file or a pipe (a log, a ticket): wide enough not to cut case ids."""


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


def site_check(
    data: Annotated[
        Path, typer.Option("--data", help="The site's data folder (DICOM and/or NIfTI); only read.")
    ],
    work: Annotated[
        Path, typer.Option("--work", help="The site's work folder; inventory.json is written here.")
    ],
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            help="CSV with columns case_id,image,label (paths relative to"
            " --data), for folders not organised by case.",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="site.toml: series selection rules, label mappings, limits."),
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="text: a table; json: the inventory on stdout.")
    ] = OutputFormat.text,
) -> None:
    """Check the site's data: list every case as usable or excluded with its reason, and write inventory.json."""
    err = Console(stderr=True)
    settings = _settings(err, config)
    found = _discover(err, data, work, manifest, settings)
    inventory = _inventory(err, found, data, settings, manifest)
    path = write_inventory(inventory, work)
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(inventory.to_json(), indent=1))
    else:
        out = Console(soft_wrap=True)
        _print_report(
            out if out.is_terminal else Console(soft_wrap=True, width=REPORT_WIDTH), inventory, path
        )
    raise typer.Exit(EXIT_USABLE if inventory.usable else EXIT_NONE_USABLE)


def _settings(err: Console, config: Path | None) -> IngestSettings:
    try:
        return read_site_settings(config)
    except SiteSettingsError as e:
        _abort(err, str(e))


def _discover(
    err: Console, data: Path, work: Path, manifest: Path | None, settings: IngestSettings
) -> Discovery:
    if data.is_dir() and work.absolute().resolve().is_relative_to(data.absolute().resolve()):
        _abort(
            err,
            f"work folder {work} lies inside the data folder {data}, which is only read; choose a work"
            " folder outside it",
        )
    try:
        return read_manifest(manifest, data, settings) if manifest else discover(data, settings)
    except SiteDataError as e:
        _abort(err, str(e))


def _inventory(
    err: Console, found: Discovery, data: Path, settings: IngestSettings, manifest: Path | None
) -> Inventory:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("checking cases", total=len(found.cases))
        return build_inventory(found, data, settings, manifest, lambda: progress.advance(task))


def _print_report(out: Console, inventory: Inventory, path: Path) -> None:
    table = Table(box=None)
    for column in ("case", "status", "modality", "shape (RAS)", "spacing mm", "stored", "labels mL"):
        table.add_column(column, no_wrap=True)
    for case in inventory.cases:
        volumes = " ".join(f"{k}:{v:g}" for k, v in (case.label_volumes_ml or {}).items())
        table.add_row(
            case.case_id,
            case.status,
            case.modality or case.image_format or "",
            "x".join(map(str, case.shape)) if case.shape else "",
            "x".join(f"{s:g}" for s in case.spacing_mm) if case.spacing_mm else "",
            case.source_orientation or "",
            volumes,
        )
    out.print(table)
    excluded = [c for c in inventory.cases if c.status == "excluded"]
    if excluded:
        out.print("\nExcluded cases:", highlight=False)
        for case in excluded:
            out.print(f"  {case.case_id}: {case.reason}", highlight=False, markup=False)
    notes = [(c.case_id, p) for c in inventory.cases for p in c.problems]
    if notes:
        out.print("\nNotes:", highlight=False)
        for case_id, note in notes:
            out.print(f"  {case_id}: {note}", highlight=False, markup=False)
    if inventory.ignored_files:
        out.print("\nFiles not used:", highlight=False)
        for entry in inventory.ignored_files:
            out.print(f"  {entry['path']}: {entry['reason']}", highlight=False, markup=False)
    summary = inventory.summary()
    out.print(
        f"\n{summary['n_cases']} cases: {summary['n_usable']} usable, {summary['n_excluded']} excluded;"
        f" {summary['n_ignored_files']} files not used. Inventory: {path}",
        highlight=False,
        markup=False,
    )


def _abort(console: Console, message: str) -> NoReturn:
    console.print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_USAGE)
