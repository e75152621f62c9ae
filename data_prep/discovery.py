"""Find the cases (image + label) in a site's data folder, and load one case.

Supported layouts of ``<site>/`` (files are only read, never written):

(a) NIfTI, the Medical Segmentation Decathlon convention, used whenever ``<site>/imagesTr/`` exists::

        <site>/imagesTr/<case_id>.nii.gz    one 3-D image per case (.nii also accepted)
        <site>/labelsTr/<case_id>.nii.gz    its label map, same grid, values 0-3 (labels.py)

    Other folders (imagesTs/, ...) are ignored.

(b) DICOM, otherwise: one sub-folder per case, named by its case_id, files at any depth below it::

        <site>/<case_id>/**    one image series (single-frame slices) + one DICOM-SEG referencing it

    Files are told apart by their headers, never by name: the SEG is the file with Modality "SEG", the image
    is the series its ReferencedSeriesSequence names; other series and non-DICOM files are ignored.

An image without a label (or a case folder without a usable SEG) is skipped with a warning. Hidden files and
folders (name starting with ".") are ignored.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from data_prep.dicom_seg import read_dicom_seg
from data_prep.dicom_series import read_dicom_series
from data_prep.errors import CaseError, SiteDataError
from data_prep.labels import LABEL_NAMES
from data_prep.nifti import read_nifti
from data_prep.volume import Volume, check_same_grid

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case: one NIfTI image, or the files of one DICOM series; the label file (NIfTI or SEG)."""

    case_id: str
    image: tuple[Path, ...]
    label: Path
    image_format: Literal["nifti", "dicom"]


def discover_cases(site_dir: Path) -> list[CaseFiles]:
    """List the cases of a site folder, sorted by case_id. Raises SiteDataError if there is none."""
    site_dir = Path(site_dir)
    if not site_dir.exists():
        raise SiteDataError(f"site data folder {site_dir} does not exist")
    if not site_dir.is_dir():
        raise SiteDataError(f"site data folder {site_dir} is not a folder")
    images_dir = site_dir / "imagesTr"
    cases = _nifti_cases(images_dir, site_dir / "labelsTr") if images_dir.is_dir() else _dicom_cases(site_dir)
    if not cases:
        raise SiteDataError(
            f"no cases found in {site_dir}: expected imagesTr/+labelsTr/ or one folder per case with a DICOM"
            " series and a DICOM-SEG"
        )
    return sorted(cases, key=lambda c: c.case_id)


def load_case(case: CaseFiles) -> tuple[Volume, Volume]:
    """Read ``(image, label)``: float32 image and uint8 label map on the same grid (RAS affine).

    Raises CaseError when a file is unreadable, the two grids differ, or label values are not in 0-3.
    """
    if case.image_format == "nifti":
        image, label = read_nifti(case.image[0]), read_nifti(case.label)
        image_source = case.image[0]
    else:
        series = read_dicom_series(case.image)
        image, label = series.volume, read_dicom_seg(case.label, series)
        image_source = series.folder
    check_same_grid(image, label, image_source, case.label)
    return image, _label_map(label, case.label)


def _label_map(label: Volume, path: Path) -> Volume:
    """The label map as uint8, after checking every value is a known label (whole numbers 0-3)."""
    values = np.unique(label.array)
    unknown = [f"{v:g}" for v in values.tolist() if v not in LABEL_NAMES]
    if unknown:
        raise CaseError(
            f"{path}: label values [{', '.join(unknown[:10])}] are not in the label convention {sorted(LABEL_NAMES)}"
            " (0 background, 1 necrotic core, 2 edema, 3 enhancing)"
        )
    return Volume(array=label.array.astype(np.uint8), affine=label.affine)


def _case_id(path: Path) -> str | None:
    return next((path.name[: -len(s)] for s in NIFTI_SUFFIXES if path.name.endswith(s)), None)


def _nifti_cases(images_dir: Path, labels_dir: Path) -> list[CaseFiles]:
    cases = []
    for image in sorted(images_dir.iterdir()):
        case_id = _case_id(image)
        if case_id is None or image.name.startswith(".") or not image.is_file():
            continue
        label = next((p for s in NIFTI_SUFFIXES if (p := labels_dir / f"{case_id}{s}").is_file()), None)
        if label is None:
            log.warning("skipping case %s: %s has no label in %s", case_id, image, labels_dir)
            continue
        cases.append(CaseFiles(case_id=case_id, image=(image,), label=label, image_format="nifti"))
    return cases


def _dicom_cases(site_dir: Path) -> list[CaseFiles]:
    cases = []
    for folder in sorted(p for p in site_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        case = _dicom_case(folder)
        if case is not None:
            cases.append(case)
    return cases


def _dicom_case(folder: Path) -> CaseFiles | None:
    """The case in ``folder`` (one SEG + the series it references), or None with a logged warning."""
    series: dict[str, list[Path]] = {}
    segs: list[tuple[Path, set[str]]] = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError):
            log.debug("ignoring %s: not a readable DICOM file", path)
            continue
        if ds.get("Modality") == "SEG":
            refs = {str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", [])}
            segs.append((path, refs))
        elif "SeriesInstanceUID" in ds:
            series.setdefault(str(ds.SeriesInstanceUID), []).append(path)
    if not segs:
        if series:
            log.warning("skipping case %s: image series but no DICOM-SEG label in %s", folder.name, folder)
        else:
            log.warning("skipping folder %s: no DICOM image series in it", folder)
        return None
    if len(segs) > 1:
        log.warning(
            "skipping case %s: %d DICOM-SEG files in %s, expected one: %s",
            folder.name,
            len(segs),
            folder,
            ", ".join(str(p.relative_to(folder)) for p, _ in segs),
        )
        return None
    seg_path, refs = segs[0]
    images = [uid for uid in refs if uid in series]
    if len(images) != 1:
        log.warning(
            "skipping case %s: %s references series %s, of which %d are in %s (expected exactly one)",
            folder.name,
            seg_path,
            sorted(refs),
            len(images),
            folder,
        )
        return None
    return CaseFiles(
        case_id=folder.name, image=tuple(series[images[0]]), label=seg_path, image_format="dicom"
    )
