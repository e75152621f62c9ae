"""``oncofed site predict``: segment a site's studies with a model, into NIfTI label maps, DICOM-SEGs and
predictions.json (site_app/predict_run.py). Studies are found exactly as ``site check`` finds cases, without
needing a label; the data folder is only read.

Exit codes (models.exit_codes): 0 at least one study written, NO_USABLE_DATA (4) none, BAD_INPUT (3) a model,
folder, site.toml or manifest that cannot be used.
"""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from data_prep.discovery import Discovery, discover
from data_prep.errors import SiteDataError
from data_prep.ingest_settings import IngestSettings
from data_prep.manifest import read_manifest
from models.exit_codes import ExitCode, fail
from site_app.site_settings import SiteSettingsError, read_site_settings


def site_predict(
    model: Annotated[
        Path,
        typer.Option("--model", help="A checkpoint (.pt, e.g. a run's models/final.pt) or a bundle folder."),
    ],
    data: Annotated[Path, typer.Option("--data", help="The studies (DICOM and/or NIfTI); only read.")],
    out: Annotated[
        Path, typer.Option("--out", help="Where label maps, DICOM-SEGs and predictions.json are written.")
    ],
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="CSV with columns case_id,image[,label] (paths relative to --data)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="site.toml: series selection rules and limits.")
    ] = None,
) -> None:
    """Segment every study in the data folder with the model: NIfTI label maps, DICOM-SEGs, predictions.json."""
    from models.model_source import ModelSourceError, load_model_source
    from site_app.predict_run import PREDICTIONS_FILE, predict_folder

    err = Console(stderr=True)
    try:
        ingest = read_site_settings(config)
    except SiteSettingsError as e:
        fail(str(e), ExitCode.BAD_INPUT)
    if data.is_dir() and out.absolute().resolve().is_relative_to(data.absolute().resolve()):
        fail(
            f"output folder {out} lies inside the data folder {data}, which is only read", ExitCode.BAD_INPUT
        )
    try:
        source = load_model_source(model)
    except ModelSourceError as e:
        fail(str(e), ExitCode.BAD_INPUT)
    found = _discover(data, manifest, ingest)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("predicting studies", total=len(found.cases))
        run = predict_folder(source, found, data, out, ingest, lambda case_id: progress.advance(task))

    for study in run.studies:
        if study.status == "written":
            seg = study.seg or study.seg_note or "no DICOM-SEG (NIfTI study)"
            err.print(f"{study.case_id}: {study.nifti}; {seg}", highlight=False, markup=False, soft_wrap=True)
        else:
            err.print(
                f"{study.case_id}: not predicted: {study.reason}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
    for entry in run.files_not_used:
        err.print(
            f"{entry['path']}: not used: {entry['reason']}", highlight=False, markup=False, soft_wrap=True
        )
    err.print(
        f"{len(run.written)} of {len(run.studies)} studies written with model {source.sha256[:19]}…;"
        f" {len(run.files_not_used)} files not used. Details: {out / PREDICTIONS_FILE}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    raise typer.Exit(int(ExitCode.OK if run.written else ExitCode.NO_USABLE_DATA))


def _discover(data: Path, manifest: Path | None, ingest: IngestSettings) -> Discovery:
    try:
        if manifest:
            return read_manifest(manifest, data, ingest, require_label=False)
        return discover(data, ingest, require_label=False)
    except SiteDataError as e:
        fail(str(e), ExitCode.BAD_INPUT)
