"""Find the cases (image + label) in a site's data folder; what cannot be a case is set aside with its reason.

Layouts of ``<site>/`` (files are only read, never written); both may appear in one folder:

(a) NIfTI, the Medical Segmentation Decathlon convention, when ``<site>/imagesTr/`` exists::

        <site>/imagesTr/<case_id>.nii.gz    one 3-D image per case (.nii also accepted)
        <site>/labelsTr/<case_id>.nii.gz    its label map, same grid, values 0-3 (labels.py)

(b) DICOM anywhere else below ``<site>/``, in any folder structure, with or without DICOMDIR: files are grouped by
    StudyInstanceUID and SeriesInstanceUID from their headers. A study is a case; its image is the series chosen
    by the site's rules (ingest_settings.py: modality, series-description pattern, among those a label references,
    the largest), its label the DICOM-SEG or RTSTRUCT referencing that series. The case id is the shortest folder
    path (relative to ``<site>``) that holds the study's images and no other study's, e.g. ``patient-7`` for
    ``patient-7/**``; studies sharing their folder get ``<folder>#1``, ``#2``, ... in StudyInstanceUID order.

Anything else (a folder that is not organised this way) is described by a manifest instead: see manifest.py.
Hidden files and folders (name starting with ".") are ignored.

Prediction (``require_label=False``) finds studies the same way but needs no label: an image in imagesTr/ without
one is a case, and a DICOM study's image series is chosen by the same rules, a labelled series first.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from data_prep.dicom.index import DicomIndex, ImageSeries, LabelObject, index_dicom_files
from data_prep.errors import SiteDataError
from data_prep.file_walk import FileProblem, walk_files
from data_prep.ingest_settings import DEFAULT_INGEST, IngestSettings

NIFTI_SUFFIXES = (".nii.gz", ".nii")

NIFTI_FOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
"""Folders of the NIfTI layout; not scanned for DICOM. imagesTs/labelsTs (unlabelled test cases) are not used."""


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case: one NIfTI image or the files of one DICOM series; the label file (None: a study
    found for prediction without a label)."""

    case_id: str
    image: tuple[Path, ...]
    label: Path | None
    image_format: Literal["nifti", "dicom"]
    label_format: Literal["nifti", "seg", "rtstruct"] | None
    modality: str | None = None
    """DICOM Modality of the image series; None for NIfTI."""


@dataclass(frozen=True)
class Exclusion:
    """A case that cannot be used, found before any voxel is read; ``reason`` names the file and the problem."""

    case_id: str
    reason: str


@dataclass
class Discovery:
    """Everything found in a data folder: candidate cases, excluded cases and files that are no part of a case."""

    cases: list[CaseFiles] = field(default_factory=list)
    excluded: list[Exclusion] = field(default_factory=list)
    ignored: list[FileProblem] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    """case id -> remarks that do not exclude it (e.g. which of several series was chosen)."""


def discover(
    site_dir: Path, settings: IngestSettings = DEFAULT_INGEST, *, require_label: bool = True
) -> Discovery:
    """Scan ``site_dir`` (both layouts); ``require_label=False`` keeps studies without a label (prediction).

    Raises SiteDataError if it is missing or not a folder.
    """
    site_dir = checked_site_dir(site_dir)
    nifti_layout = (site_dir / "imagesTr").is_dir()
    files, problems = walk_files(
        site_dir, skip_folder=lambda p: nifti_layout and p.parent == site_dir and p.name in NIFTI_FOLDERS
    )
    found = Discovery(ignored=problems)
    if nifti_layout:
        _nifti_cases(site_dir, found, require_label)
    _dicom_cases(site_dir, index_dicom_files(files), settings, found, require_label)
    found.cases.sort(key=lambda c: c.case_id)
    found.excluded.sort(key=lambda e: e.case_id)
    return found


def discover_cases(site_dir: Path, settings: IngestSettings = DEFAULT_INGEST) -> list[CaseFiles]:
    """The candidate cases of a site folder, sorted by case_id. Raises SiteDataError if there is none."""
    cases = discover(site_dir, settings).cases
    if not cases:
        raise SiteDataError(
            f"no cases found in {site_dir}: expected imagesTr/+labelsTr/ or DICOM studies whose image series a"
            " DICOM-SEG or RTSTRUCT references (run `oncofed site check` for the reasons)"
        )
    return cases


def checked_site_dir(site_dir: Path) -> Path:
    """``site_dir`` made absolute, after checking it is an existing folder (SiteDataError otherwise)."""
    site_dir = Path(site_dir).absolute()
    if not site_dir.exists():
        raise SiteDataError(f"site data folder {site_dir} does not exist")
    if not site_dir.is_dir():
        raise SiteDataError(f"site data folder {site_dir} is not a folder")
    return site_dir


def nifti_case_id(path: Path) -> str | None:
    """``case`` for ``case.nii.gz`` or ``case.nii``; None for other names."""
    return next(
        (path.name[: -len(s)] for s in NIFTI_SUFFIXES if path.name.endswith(s) and len(path.name) > len(s)),
        None,
    )


def _nifti_cases(site_dir: Path, found: Discovery, require_label: bool) -> None:
    images_dir, labels_dir = site_dir / "imagesTr", site_dir / "labelsTr"
    images, image_problems = walk_files(images_dir)
    labels, label_problems = walk_files(labels_dir) if labels_dir.is_dir() else ([], [])
    found.ignored.extend(image_problems + label_problems)
    by_id = {nifti_case_id(p): p for p in labels if p.parent == labels_dir}
    used_labels = set()
    for image in images:
        case_id = nifti_case_id(image)
        if case_id is None or image.parent != images_dir:
            found.ignored.append(
                FileProblem(
                    image,
                    "not a NIfTI image of the imagesTr/ layout"
                    " (expected imagesTr/<case_id>.nii.gz); not used",
                )
            )
        elif case_id not in by_id and not require_label:
            found.cases.append(CaseFiles(case_id, (image,), None, "nifti", None))
        elif case_id not in by_id:
            found.excluded.append(
                Exclusion(case_id, f"{image} has no label: expected {labels_dir}/{case_id}.nii.gz")
            )
        else:
            used_labels.add(by_id[case_id])
            found.cases.append(CaseFiles(case_id, (image,), by_id[case_id], "nifti", "nifti"))
    for label in labels:
        if label not in used_labels:
            found.ignored.append(
                FileProblem(label, "label without an image of the same name in imagesTr/; not used")
            )


@dataclass
class _Study:
    series: list[ImageSeries] = field(default_factory=list)
    labels: list[LabelObject] = field(default_factory=list)


def _dicom_cases(
    site_dir: Path, index: DicomIndex, settings: IngestSettings, found: Discovery, require_label: bool
) -> None:
    found.ignored.extend(index.ignored)
    studies: dict[str, _Study] = defaultdict(_Study)
    for series in sorted(index.series.values(), key=lambda s: s.files[0]):  # scan order: stable messages
        studies[series.study_uid].series.append(series)
    for label in index.labels:  # a label joins the study of the series it references, wherever it is stored
        study = next(
            (index.series[s].study_uid for s in sorted(label.referenced_series) if s in index.series),
            label.study_uid,
        )
        studies[study].labels.append(label)
    case_ids = _case_ids(
        site_dir,
        {
            uid: [f for s in study.series for f in s.files] or [label.path for label in study.labels]
            for uid, study in studies.items()
        },
    )
    for uid, study in studies.items():
        case_id = case_ids[uid]
        outcome = _choose(study, settings, require_label)
        if isinstance(outcome, str):
            found.excluded.append(Exclusion(case_id, outcome))
            continue
        series, label, notes = outcome
        found.cases.append(
            CaseFiles(
                case_id,
                tuple(sorted(series.files)),
                label.path if label else None,
                "dicom",
                label.kind if label else None,
                series.modality,
            )
        )
        if notes:
            found.notes[case_id] = notes


def _choose(
    study: _Study, settings: IngestSettings, require_label: bool = True
) -> tuple[ImageSeries, LabelObject | None, list[str]] | str:
    """The study's image series and label by the site's rules, or the reason there is none.

    Without ``require_label`` a study needs no label: among the matching series a labelled one is still preferred.
    """
    modalities = "/".join(settings.modalities)
    if not study.series:
        label = study.labels[0]
        return (
            f"{label.path}: the image series it labels is not in the export"
            f" ({len(label.referenced_series)} series referenced, none found)"
        )
    candidates = [s for s in study.series if s.modality in settings.modalities]
    if not candidates:
        return (
            f"{_folder(study.series[0])}: no {modalities} image series in the study, found"
            f" {_describe(study.series)} (modalities in site.toml)"
        )
    matching = [s for s in candidates if settings.matches_description(s.description)]
    if not matching:
        return (
            f"{_folder(candidates[0])}: no series description matches {settings.series_description!r},"
            f" found {_describe(candidates)} (series-description in site.toml)"
        )
    if not study.labels and require_label:
        return (
            f"{_folder(matching[0])}: no label: no DICOM-SEG or RTSTRUCT references the image series"
            f" {_describe(matching)}"
        )
    labelled = [s for s in matching if any(s.series_uid in label.referenced_series for label in study.labels)]
    if not labelled and require_label:
        return (
            f"{', '.join(str(label.path) for label in study.labels)}: label(s) reference none of the image"
            f" series chosen by the site's rules ({_describe(matching)})"
        )
    chosen = max(
        labelled or matching, key=lambda s: (s.n_frames, s.series_uid)
    )  # the largest; UID: stable ties
    labels = sorted(
        (label for label in study.labels if chosen.series_uid in label.referenced_series),
        key=lambda label: label.path,
    )
    if len(labels) > 1 and require_label:
        return (
            f"{_folder(chosen)}: {len(labels)} labels reference the image series {_describe([chosen])}:"
            f" {', '.join(str(label.path) for label in labels)}; keep one, or name the label in a manifest"
        )
    notes = []
    if len(study.series) > 1:
        notes.append(f"{len(study.series)} image series in the study; chose {_describe([chosen])}")
    return chosen, (labels[0] if len(labels) == 1 else None), notes


def _describe(series: list[ImageSeries]) -> str:
    return ", ".join(f"{s.modality} '{s.description}' ({s.n_frames} frames)" for s in series)


def _folder(series: ImageSeries) -> Path:
    return series.files[0].parent


def _case_ids(site_dir: Path, study_files: dict[str, list[Path]]) -> dict[str, str]:
    """Case id of each study: the shortest folder prefix that holds its files and no other study's (see top)."""
    folders = {
        uid: {PurePosixPath(f.parent.relative_to(site_dir)).parts for f in files}
        for uid, files in study_files.items()
    }
    ids: dict[str, str] = {}
    shared: dict[str, list[str]] = defaultdict(list)
    for uid, own in folders.items():
        common = _common_prefix(own)
        others = [parts for other, theirs in folders.items() if other != uid for parts in theirs]
        prefix = next(
            (
                common[:n]
                for n in range(1, len(common) + 1)
                if not any(parts[:n] == common[:n] for parts in others)
            ),
            None,
        )
        if prefix is None:
            shared["/".join(common) or "study"].append(uid)
        else:
            ids[uid] = "/".join(prefix)
    for base, uids in shared.items():
        for number, uid in enumerate(sorted(uids), start=1):
            ids[uid] = f"{base}#{number}"
    return ids


def _common_prefix(paths: set[tuple[str, ...]]) -> tuple[str, ...]:
    first, *rest = sorted(paths)
    n = len(first)
    for other in rest:
        n = min(n, len(other))
        n = next((i for i in range(n) if first[i] != other[i]), n)
    return first[:n]
