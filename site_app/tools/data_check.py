"""The site's data check (`oncofed site check`): the inventory of a data folder, case by case, and its report.

Reads the data folder only; writes `inventory.json` into the work folder (atomically). The command (deploy's
site_cli) chooses where the report goes and what the exit code is.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from data_prep.discovery import discover
from data_prep.errors import SiteDataError
from data_prep.inventory import Inventory, build_inventory, write_inventory
from data_prep.manifest import read_manifest
from site_app.settings.site_file import SiteSettingsError, read_site_settings


class DataCheckError(Exception):
    """A named input is wrong (site.toml, manifest, data or work folder); the message names it and the fix."""


@dataclass(frozen=True)
class DataCheck:
    inventory: Inventory
    path: Path
    """Where inventory.json was written."""


def check_site_data(
    data: Path,
    work: Path,
    manifest: Path | None = None,
    config: Path | None = None,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> DataCheck:
    """Discover the cases under `data` (or read them from `manifest`), check each, and write the inventory.

    `config` is site.toml ([series], [labels], [limits]); `on_progress(done, total)` follows the cases.
    """
    try:
        settings = read_site_settings(config)
    except SiteSettingsError as error:
        raise DataCheckError(str(error)) from None
    if data.is_dir() and work.absolute().resolve().is_relative_to(data.absolute().resolve()):
        raise DataCheckError(
            f"work folder {work} lies inside the data folder {data}, which is only read; choose a work"
            " folder outside it"
        )
    try:
        found = read_manifest(manifest, data, settings) if manifest else discover(data, settings)
    except SiteDataError as error:
        raise DataCheckError(str(error)) from None
    done, total = 0, len(found.cases)
    on_progress(done, total)

    def one_more() -> None:
        nonlocal done
        done += 1
        on_progress(done, total)

    inventory = build_inventory(found, data, settings, manifest, one_more)
    return DataCheck(inventory=inventory, path=write_inventory(inventory, work))


def print_report(out: Console, check: DataCheck) -> None:
    """A table of every case (usable or excluded), then the reasons, notes, unused files and a summary."""
    inventory = check.inventory
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
        f" {summary['n_ignored_files']} files not used. Inventory: {check.path}",
        highlight=False,
        markup=False,
    )
