"""`oncofed site report` and `oncofed site predict`: the site commands that need only the site's modules
(site_app, data_prep, models).

`oncofed_cli` puts them in the `site` group, beside deploy's site_cli (`site start`, `site check`). Torch,
MONAI, highdicom and the readers load when a command runs, never when `oncofed` starts.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from models.shared.exit_codes import ExitCode, fail

if TYPE_CHECKING:
    from data_prep.discovery import Discovery
    from data_prep.ingest_settings import IngestSettings

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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from data_prep.errors import SiteDataError
    from models.shared.terminal import make_console
    from site_app.tools.site_report import write_site_report

    if not work.is_dir():
        raise fail(
            f"work folder {work} does not exist or is not a folder; give the site's work-path",
            ExitCode.BAD_INPUT,
        )
    if model is not None and not model.is_file():
        raise fail(f"model checkpoint {model} does not exist", ExitCode.BAD_INPUT)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=make_console(stderr=True), transient=True) as progress:
            task = progress.add_task("validating cases", total=None)
            files = write_site_report(
                work, model, lambda done, total: progress.update(task, completed=done, total=total)
            )
    except FileNotFoundError as error:  # never validated here, or its last global model is gone
        raise fail(str(error), ExitCode.NO_USABLE_DATA) from None
    except SiteDataError as error:  # the data folder the site validated on is gone
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    failed = f", {files.n_failed} could not be validated (listed in the report)" if files.n_failed else ""
    make_console().print(
        f"{files.n_cases} cases{failed}\nReport (stays at this site): {files.html}\nPer case: {files.csv}",
        highlight=False,
        soft_wrap=True,
    )


@app.command("predict", no_args_is_help=True)
def site_predict(
    data: Annotated[Path, typer.Option("--data", help="The studies (DICOM and/or NIfTI); only read.")],
    out: Annotated[
        Path, typer.Option("--out", help="Where label maps, DICOM-SEGs and predictions.json are written.")
    ],
    model: Annotated[
        Path | None,
        typer.Option("--model", help="A checkpoint (.pt, e.g. a run's models/final.pt) or a bundle folder."),
    ] = None,
    work: Annotated[
        Path | None,
        typer.Option(
            "--work",
            help="Instead of --model: the site's work folder; its personalized model when it has one for the"
            " global model it last validated, else that global model.",
        ),
    ] = None,
    global_model: Annotated[
        bool, typer.Option("--global-model", help="With --work: the global model, not the personalized one.")
    ] = False,
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="CSV with columns case_id,image[,label] (paths relative to --data)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="site.toml: series selection rules and limits.")
    ] = None,
) -> None:
    """Segment every study in the data folder with the model: NIfTI label maps, DICOM-SEGs, predictions.json.

    Studies are found as `site check` finds cases, without needing a label; the data folder is only read
    (site_app/tools/predict_run.py). Exit codes: OK when at least one study was written, NO_USABLE_DATA when none,
    BAD_INPUT for a model, folder, site.toml or manifest that cannot be used.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from models.model_source import ModelSourceError
    from models.shared.terminal import make_console
    from site_app.settings.site_file import SiteSettingsError, read_site_settings
    from site_app.tools.model_choice import command_model
    from site_app.tools.predict_run import PREDICTIONS_FILE, predict_folder

    err = make_console(stderr=True)
    try:
        ingest = read_site_settings(config)
    except SiteSettingsError as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    if not data.is_dir():
        raise fail(f"data folder {data} does not exist or is not a folder", ExitCode.BAD_INPUT)
    if out.absolute().resolve().is_relative_to(data.absolute().resolve()):
        raise fail(
            f"output folder {out} lies inside the data folder {data}, which is only read; choose another --out",
            ExitCode.BAD_INPUT,
        )
    try:
        chosen = command_model(model, work, global_model)
    except ModelSourceError as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    source = chosen.source
    err.print(f"Model: {chosen.note}: {chosen.path}", highlight=False, markup=False, soft_wrap=True)
    found = _discover_studies(data, manifest, ingest)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("predicting studies", total=len(found.cases))
        run = predict_folder(source, found, data, out, ingest, lambda case_id: progress.advance(task))

    for study in run.studies:
        if study.status == "written":
            seg = study.seg or study.seg_note or "no DICOM-SEG (NIfTI study)"
            line = f"{study.case_id}: {study.nifti}; {seg}"
        else:
            line = f"{study.case_id}: not predicted: {study.reason}"
        err.print(line, highlight=False, markup=False, soft_wrap=True)
    for entry in run.files_not_used:
        err.print(
            f"{entry['path']}: not used: {entry['reason']}", highlight=False, markup=False, soft_wrap=True
        )
    summary = (
        f"{len(run.written)} of {len(run.studies)} studies written with the {chosen.role} model"
        f" {source.sha256[:19]}…;"
        f" {len(run.files_not_used)} files not used. Details: {out / PREDICTIONS_FILE}"
    )
    if not run.written:
        raise fail(f"no study could be predicted: {summary}", ExitCode.NO_USABLE_DATA)
    err.print(summary, highlight=False, markup=False, soft_wrap=True)


def _discover_studies(data: Path, manifest: Path | None, ingest: "IngestSettings") -> "Discovery":
    """The studies in ``data`` (or listed in ``manifest``), a label not required; BAD_INPUT when unreadable."""
    from data_prep.discovery import discover
    from data_prep.errors import SiteDataError
    from data_prep.manifest import read_manifest

    try:
        if manifest:
            return read_manifest(manifest, data, ingest, require_label=False)
        return discover(data, ingest, require_label=False)
    except SiteDataError as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
