"""Sort the files of an export by their DICOM headers (no pixel data read): image series, label objects
(DICOM-SEG, RTSTRUCT) and everything else, each file that is not used getting its reason.

Files are told apart by their headers, never by name or folder. A DICOMDIR is not needed: the folder is scanned.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import MediaStorageDirectoryStorage

from data_prep.dicom.rtstruct import referenced_series
from data_prep.dicom.series import frame_count
from data_prep.file_walk import FileProblem

LABEL_KINDS: dict[str, Literal["seg", "rtstruct"]] = {"SEG": "seg", "RTSTRUCT": "rtstruct"}
"""DICOM Modality of the label objects we read -> CaseFiles.label_format."""


@dataclass
class ImageSeries:
    """Header facts of one image series; ``files`` in scan order."""

    study_uid: str
    series_uid: str
    modality: str
    description: str
    files: list[Path] = field(default_factory=list)
    n_frames: int = 0


@dataclass(frozen=True)
class LabelObject:
    """A DICOM-SEG or RTSTRUCT file and the image series it says it labels."""

    path: Path
    kind: Literal["seg", "rtstruct"]
    study_uid: str
    referenced_series: frozenset[str]


@dataclass
class DicomIndex:
    series: dict[str, ImageSeries] = field(default_factory=dict)
    """SeriesInstanceUID -> series."""
    labels: list[LabelObject] = field(default_factory=list)
    ignored: list[FileProblem] = field(default_factory=list)
    """Files that are no part of any case, with the reason."""


def index_dicom_files(files: Iterable[Path]) -> DicomIndex:
    """Read every file's header and sort it into series, labels, or ignored files with a reason."""
    index = DicomIndex()
    for path in files:
        ds, problem = _header(path)
        if ds is None:
            index.ignored.append(FileProblem(path, problem))
            continue
        try:
            _sort(index, path, ds)
        except (
            ValueError,
            TypeError,
            AttributeError,
            KeyError,
        ) as e:  # a value pydicom parses lazily is invalid
            index.ignored.append(FileProblem(path, f"malformed header value: {e}"))
    return index


def _sort(index: DicomIndex, path: Path, ds: Dataset) -> None:
    """Add one file to the index by what its header says it is."""
    modality = str(ds.get("Modality", "")).upper()
    study, series = str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", ""))
    if modality in LABEL_KINDS:
        refs = _label_references(ds, modality)
        if not refs:
            index.ignored.append(
                FileProblem(
                    path,
                    f"{modality} file references no image series"
                    " (its series references are missing); cannot be placed",
                )
            )
            return
        index.labels.append(LabelObject(path, LABEL_KINDS[modality], study, frozenset(refs)))
    elif "Rows" in ds and "Columns" in ds:
        if not study or not series:
            index.ignored.append(
                FileProblem(
                    path,
                    "image without StudyInstanceUID or SeriesInstanceUID; cannot be grouped into a series",
                )
            )
            return
        n_frames = frame_count(ds)
        entry = index.series.setdefault(
            series, ImageSeries(study, series, modality or "unknown", str(ds.get("SeriesDescription", "")))
        )
        entry.files.append(path)
        entry.n_frames += n_frames
    elif "PixelData" in ds or "Image Storage" in getattr(ds.get("SOPClassUID"), "name", ""):
        index.ignored.append(
            FileProblem(path, "image object without Rows/Columns: its pixel data cannot be read")
        )
    else:
        kind = getattr(ds.get("SOPClassUID"), "name", None) or "unknown SOP class"
        index.ignored.append(
            FileProblem(
                path, f"{kind} (Modality {modality or 'none'}) holds no image and is not a label; not used"
            )
        )


def _header(path: Path) -> tuple[Dataset | None, str]:
    """The header without pixel data, or None and why the file is not a usable DICOM file."""
    try:
        if path.stat().st_size == 0:
            return None, "empty file (0 bytes)"
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except PermissionError:
        return None, "permission denied: this user cannot read the file; grant read access or remove it"
    except InvalidDicomError:
        return None, "not a DICOM file (no 'DICM' marker after the 128-byte preamble); not used"
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as e:
        return None, f"truncated or corrupt DICOM header: {type(e).__name__}: {e}"
    if ds.file_meta.get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
        return None, "DICOMDIR (an index of the export); not needed, the folder itself is scanned"
    return ds, ""


def _label_references(ds: Dataset, modality: str) -> set[str]:
    if modality == "SEG":
        return {
            str(item.SeriesInstanceUID)
            for item in ds.get("ReferencedSeriesSequence", [])
            if "SeriesInstanceUID" in item
        }
    return referenced_series(ds)
