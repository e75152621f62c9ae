"""Predict every study found in a data folder and write, per study, a NIfTI label map, a DICOM-SEG (DICOM studies)
and, for all of them, predictions.json. Runs at the hospital; the data folder is only read.

Output folder::

    OUT/nifti/<study>.nii.gz      uint8 label map (0-3) on the study's stored grid: its exact shape and affine
    OUT/dicom-seg/<study>.dcm     DICOM Segmentation referencing the study's image series (DICOM studies)
    OUT/predictions.json          the model (hash, source, role: "global" or the site's "personalized"),
                                  settings, each study's files and volumes in mL, and
                                  every study or file that was not predicted, with its reason

``<study>`` is the case id with characters other than letters, digits, ".", "_" and "-" replaced by "_". Every
file is written atomically. Studies fail one at a time: a study that cannot be read or predicted is recorded with
its reason and the others go on.
"""

import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from data_prep.dicom.seg_writer import Algorithm, NoSegment, write_prediction_seg
from data_prep.discovery import CaseFiles, Discovery, discover
from data_prep.errors import CaseError, SiteDataError
from data_prep.ingest_settings import IngestSettings
from data_prep.manifest import read_manifest
from data_prep.nifti import write_label_nifti
from data_prep.transforms import PipelineSettings
from data_prep.volume import Volume
from models.model_source import ModelSource, ModelSourceError
from models.shared.atomic import atomic_write_text
from models.shared.exit_codes import CommandError, ExitCode, errors_as
from models.shared.terminal import make_console
from site_app.learning.personalize import META_PERSONALIZED_FROM, model_role
from site_app.learning.validation import SLIDING_WINDOW
from site_app.settings.site_file import SiteSettingsError, read_site_settings
from site_app.tools.model_choice import command_model
from site_app.tools.prediction import predict_study

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.json"
FORMAT = "oncofed-predictions/1"
NIFTI_FOLDER = "nifti"
SEG_FOLDER = "dicom-seg"
WRITTEN, FAILED, EXCLUDED = "written", "failed", "excluded"


@dataclass
class StudyRecord:
    case_id: str
    status: str
    """written | failed (could not be read or predicted) | excluded (found unusable before reading voxels)."""
    reason: str | None = None
    image_format: str | None = None
    modality: str | None = None
    nifti: str | None = None
    """Relative to the output folder."""
    seg: str | None = None
    seg_note: str | None = None
    """Why a DICOM study has no SEG (e.g. nothing predicted)."""
    seg_series_instance_uid: str | None = None
    seg_segments: dict[str, int] | None = None
    """SEG segment number -> label value."""
    volumes_ml: dict[str, float] | None = None
    """Label value -> predicted volume in mL."""
    shape: list[int] | None = None
    """Stored (i, j, k) shape of the image and of the label map."""


@dataclass
class PredictionRun:
    studies: list[StudyRecord] = field(default_factory=list)
    files_not_used: list[dict[str, str]] = field(default_factory=list)

    @property
    def written(self) -> list[StudyRecord]:
        return [s for s in self.studies if s.status == WRITTEN]


def predict_studies(
    model: Path | None,
    work: Path | None,
    use_global: bool,
    data: Path,
    out: Path,
    manifest: Path | None,
    config: Path | None,
) -> None:
    """`oncofed site predict`: check the inputs, predict every study with the model (`model`, or the site's choice
    in its work folder `work`: site_app/tools/model_choice.py) with a progress bar, and say on stderr which model it
    is, what was written for each study and why any was not. BAD_INPUT for a model, folder, site.toml or manifest
    that cannot be used; NO_USABLE_DATA when no study was written."""
    with errors_as(ExitCode.BAD_INPUT, SiteSettingsError, ModelSourceError, SiteDataError):
        ingest = read_site_settings(config)
        check_folders(data, out)
        chosen = command_model(model, work, use_global)
        if manifest:
            found = read_manifest(manifest, data, ingest, require_label=False)
        else:
            found = discover(data, ingest, require_label=False)
    source = chosen.source
    err = make_console(stderr=True, highlight=False, soft_wrap=True)
    err.print(f"Model: {chosen.note}: {chosen.path}", markup=False)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("predicting studies", total=len(found.cases))
        run = predict_folder(source, found, data, out, ingest, lambda case_id: progress.advance(task))
    for study in run.studies:
        if study.status == "written":
            seg = study.seg or study.seg_note or "no DICOM-SEG (NIfTI study)"
            err.print(f"{study.case_id}: {study.nifti}; {seg}", markup=False)
        else:
            err.print(f"{study.case_id}: not predicted: {study.reason}", markup=False)
    for entry in run.files_not_used:
        err.print(f"{entry['path']}: not used: {entry['reason']}", markup=False)
    summary = (
        f"{len(run.written)} of {len(run.studies)} studies written with the {chosen.role} model"
        f" {source.sha256[:19]}…;"
        f" {len(run.files_not_used)} files not used. Details: {out / PREDICTIONS_FILE}"
    )
    if not run.written:
        raise CommandError(f"no study could be predicted: {summary}", ExitCode.NO_USABLE_DATA)
    err.print(summary, markup=False)


def check_folders(data: Path, out: Path) -> None:
    """The data folder exists, and the output folder lies outside it (the data folder is only read)."""
    if not data.is_dir():
        raise SiteDataError(f"data folder {data} does not exist or is not a folder")
    if out.absolute().resolve().is_relative_to(data.absolute().resolve()):
        raise SiteDataError(
            f"output folder {out} lies inside the data folder {data}, which is only read; choose another --out"
        )


def predict_folder(
    source: ModelSource,
    found: Discovery,
    data_dir: Path,
    out_dir: Path,
    ingest: IngestSettings,
    on_study: Callable[[str], None] | None = None,
    device: torch.device | None = None,
) -> PredictionRun:
    """Predict each study of ``found`` into ``out_dir`` and write predictions.json last; ``on_study`` after each.

    ``device``: where the network runs (default: the GPU when there is one).
    """
    data_dir = Path(data_dir).absolute()
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = source.build().to(device)
    settings = PipelineSettings(
        spacing_mm=source.spacing_mm, patch_size=source.patch_size, samples_per_case=1
    )
    algorithm = Algorithm(
        name=f"OncoFed 3D UNet ({source.preset})",
        version=f"oncofed {version('oncofed')}",
        model_sha256=source.sha256,
    )
    run = PredictionRun()
    names = study_file_names([c.case_id for c in found.cases])
    for exclusion in found.excluded:
        run.studies.append(StudyRecord(exclusion.case_id, EXCLUDED, _relative(exclusion.reason, data_dir)))
    for case in found.cases:
        record = StudyRecord(case.case_id, FAILED, image_format=case.image_format, modality=case.modality)
        try:
            _predict_one(
                model, case, settings, ingest, device, out_dir, names[case.case_id], algorithm, record
            )
        except CaseError as e:
            record.reason = _relative(str(e), data_dir)
        except ValueError as e:  # the preprocessing cannot normalise the image (constant, no head)
            record.reason = _relative(f"{os.path.commonpath(case.image)}: {e}", data_dir)
        except Exception as e:  # one study's unexpected failure must not stop the others
            log.exception("study %s: unexpected error", case.case_id)
            record.reason = _relative(f"unexpected error: {type(e).__name__}: {e}", data_dir)
        run.studies.append(record)
        if on_study is not None:
            on_study(case.case_id)
    run.studies.sort(key=lambda s: s.case_id)
    run.files_not_used = [
        {"path": _relative(str(p.path), data_dir), "reason": _relative(p.reason, data_dir)}
        for p in sorted(found.ignored, key=lambda p: p.path)
    ]
    payload = {
        "format": FORMAT,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": str(data_dir),
        "model": {
            "sha256": source.sha256,
            "path": str(Path(source.path).absolute()),
            "kind": source.kind,
            "role": model_role(source.meta),
            "personalized_from": source.meta.get(META_PERSONALIZED_FROM),
            "preset": source.preset,
            "round": source.meta.get("round"),
        },
        "preprocessing": {
            "spacing_mm": source.spacing_mm,
            "patch_size": source.patch_size,
            "sliding_window": dict(SLIDING_WINDOW),
            "settings": asdict(settings.preprocessing),
            "device": device.type,
        },
        "software": {name: version(name) for name in ("oncofed", "torch", "monai", "highdicom")},
        "summary": {
            "n_written": len(run.written),
            "n_not_predicted": len(run.studies) - len(run.written),
            "n_files_not_used": len(run.files_not_used),
        },
        "studies": [asdict(s) for s in run.studies],
        "files_not_used": run.files_not_used,
    }
    atomic_write_text(out_dir / PREDICTIONS_FILE, json.dumps(payload, indent=1) + "\n")
    return run


def _predict_one(
    model: torch.nn.Module,
    case: CaseFiles,
    settings: PipelineSettings,
    ingest: IngestSettings,
    device: torch.device,
    out_dir: Path,
    name: str,
    algorithm: Algorithm,
    record: StudyRecord,
) -> None:
    """Predict one study and write its files; fills ``record`` (status written once the NIfTI is on disk)."""
    prediction = predict_study(model, case, settings, ingest, device)
    nifti = Path(NIFTI_FOLDER) / f"{name}.nii.gz"
    write_label_nifti(out_dir / nifti, Volume(prediction.label, prediction.image.affine))
    record.status, record.nifti = WRITTEN, str(nifti)
    record.volumes_ml = prediction.volumes_ml()
    record.shape = list(prediction.label.shape)
    if prediction.series is None:
        return
    seg = Path(SEG_FOLDER) / f"{name}.dcm"
    try:
        written = write_prediction_seg(
            out_dir / seg, prediction.label, prediction.series, case.image, algorithm
        )
    except NoSegment as e:
        record.seg_note = str(e)
        return
    record.seg = str(seg)
    record.seg_series_instance_uid = written.series_instance_uid
    record.seg_segments = {str(number): value for number, value in written.segments.items()}


def study_file_names(case_ids: list[str]) -> dict[str, str]:
    """A distinct file-name stem for each case id (unsafe characters replaced; a clash gets -2, -3, ...)."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for case_id in sorted(case_ids):
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", case_id).lstrip(".") or "study"
        name, n = stem, 1
        while name.lower() in used:  # also distinct on case-insensitive file systems
            n += 1
            name = f"{stem}-{n}"
        used.add(name.lower())
        names[case_id] = name
    return names


def _relative(text: str, data_dir: Path) -> str:
    """``text`` with the data folder's path removed from the paths it names."""
    return text.replace(f"{data_dir}{os.sep}", "").replace(str(data_dir), ".")
