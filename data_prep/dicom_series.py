"""Read one single-frame DICOM image series (CT, MR, ...) into a RAS Volume, keeping its SOP Instance UIDs.

Axes of the returned array: i runs along a DICOM row (the column index; direction = the first three values of
ImageOrientationPatient), j along a DICOM column (the row index; the last three values), k along the slice
normal cross(row, column). Slices are ordered by the projection of ImagePositionPatient on that normal, never
by file name or InstanceNumber, which exporters assign freely.

Affine, in DICOM's LPS first: columns row_cosine * PixelSpacing[1], column_cosine * PixelSpacing[0],
(IPP_last - IPP_first) / (n - 1) (normal * SliceThickness for a single slice), translation IPP_first.
Then RAS = diag(-1, -1, 1, 1) @ LPS, done here and nowhere else.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from data_prep.errors import CaseError
from data_prep.volume import Volume, checked_affine

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Negates x and y: DICOM patient coordinates are LPS, a Volume's are RAS. The matrix is its own inverse."""

ORIENTATION_TOLERANCE = 1e-4
"""Largest difference allowed between the ImageOrientationPatient values of two slices of one series."""

SLICE_GAP_RELATIVE_TOLERANCE = 1e-2
"""Largest deviation of any slice gap from the mean gap, as a fraction of the mean (missing slices fail this)."""


@dataclass(frozen=True, eq=False)
class DicomSeries:
    """A series read into a Volume; ``sop_instance_uids[k]`` is the SOPInstanceUID of slice ``volume.array[:, :, k]``."""

    volume: Volume
    sop_instance_uids: tuple[str, ...]
    series_instance_uid: str
    folder: Path
    """Common folder of the series' files, used in messages."""


def series_geometry(
    positions_lps: np.ndarray,
    orientation: Sequence[float],
    pixel_spacing: Sequence[float],
    slice_thickness: float,
    source: Path | str,
) -> tuple[np.ndarray, np.ndarray]:
    """Sort slices along their normal and build the RAS affine, from header values only (no files, no pixels).

    ``positions_lps``: (n, 3) ImagePositionPatient of each slice, mm; ``orientation``: the six
    ImageOrientationPatient values; ``pixel_spacing``: (row spacing, column spacing) in mm.
    Returns ``(order, affine)``: slice ``order[k]`` becomes k; ``affine`` is 4x4 voxel (i, j, k) -> RAS mm.
    Raises CaseError naming ``source`` for duplicate or irregularly spaced slices and for non-orthogonal axes.
    """
    row, col = np.asarray(orientation[:3], dtype=float), np.asarray(orientation[3:], dtype=float)
    normal = np.cross(row, col)
    distances = positions_lps @ normal
    order = np.argsort(distances, kind="stable")
    positions, distances = positions_lps[order], distances[order]
    n = len(order)
    if n > 1:
        gaps = np.diff(distances)
        if gaps.min() <= 0:
            k = int(np.argmin(gaps))
            raise CaseError(
                f"{source}: two slices share the position {distances[k]:.3f} mm along the slice normal"
                " (duplicate slices, or several series/echoes mixed in one)"
            )
        if np.abs(gaps - gaps.mean()).max() > SLICE_GAP_RELATIVE_TOLERANCE * gaps.mean():
            raise CaseError(
                f"{source}: slices are not evenly spaced (gaps from {gaps.min():.3f} to {gaps.max():.3f} mm,"
                " missing slices?)"
            )
        step = (positions[-1] - positions[0]) / (n - 1)
    else:
        step = normal * slice_thickness
    lps = np.eye(4)
    lps[:3, 0] = row * float(pixel_spacing[1])
    lps[:3, 1] = col * float(pixel_spacing[0])
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    return order, checked_affine(LPS_TO_RAS @ lps, source)


def read_dicom_series(files: Sequence[Path]) -> DicomSeries:
    """Read the files of one series into a float32 Volume with RescaleSlope/RescaleIntercept applied.

    Raises CaseError naming the series folder (and file) when the files are not one consistent series of
    single-frame slices: mixed series, differing orientation, size or pixel spacing, missing geometry.
    """
    if not files:
        raise CaseError("empty DICOM series: no files given")
    files = [Path(f) for f in files]
    folder = Path(os.path.commonpath(files)) if len(files) > 1 else files[0].parent
    datasets = [_read(f) for f in files]
    first, first_file = datasets[0], files[0]
    for ds, f in zip(datasets, files):
        for keyword in ("SeriesInstanceUID", "Rows", "Columns", "PixelSpacing", "ImageOrientationPatient"):
            value, expected = _required(ds, keyword, f), _required(first, keyword, first_file)
            if keyword == "ImageOrientationPatient":
                same = np.allclose(
                    np.asarray(value, float), np.asarray(expected, float), atol=ORIENTATION_TOLERANCE
                )
            else:
                same = value == expected
            if not same:
                raise CaseError(
                    f"{folder}: not one consistent series: {keyword} is {value} in {f.name}"
                    f" but {expected} in {first_file.name}"
                )
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise CaseError(f"{f}: multi-frame images are not supported; expected one slice per file")
    positions = np.array(
        [[float(v) for v in _required(ds, "ImagePositionPatient", f)] for ds, f in zip(datasets, files)]
    )
    order, affine = series_geometry(
        positions,
        [float(v) for v in first.ImageOrientationPatient],
        [float(v) for v in first.PixelSpacing],
        float(first.get("SliceThickness") or 0.0),
        folder,
    )
    array = np.empty((int(first.Columns), int(first.Rows), len(files)), dtype=np.float32)
    for k, index in enumerate(order):
        array[:, :, k] = _slice_pixels(datasets[index], files[index]).T
    return DicomSeries(
        volume=Volume(array=array, affine=affine),
        sop_instance_uids=tuple(str(datasets[index].SOPInstanceUID) for index in order),
        series_instance_uid=str(first.SeriesInstanceUID),
        folder=folder,
    )


def _read(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError) as e:
        raise CaseError(f"{path}: cannot read as DICOM: {e}") from e


def _required(ds: Dataset, keyword: str, path: Path):
    value = ds.get(keyword)
    if value is None or value == "":
        raise CaseError(f"{path}: required attribute {keyword} is missing or empty")
    return value


def _slice_pixels(ds: Dataset, path: Path) -> np.ndarray:
    """(Rows, Columns) float32 modality values: stored value * RescaleSlope + RescaleIntercept."""
    try:
        pixels = ds.pixel_array
    except (AttributeError, ValueError, RuntimeError, NotImplementedError) as e:
        raise CaseError(f"{path}: cannot decode pixel data: {e}") from e
    if pixels.ndim != 2:
        raise CaseError(
            f"{path}: expected a single grayscale frame, found pixel data of shape {pixels.shape}"
        )
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
