"""Rasterize the contours of a DICOM RTSTRUCT onto the grid of the image series it was drawn on.

Each CLOSED_PLANAR contour lies on one image slice; a voxel belongs to an ROI where its centre lies inside the
ROI's contours on that slice by the even-odd rule (a contour inside another is a hole, as radiotherapy systems
export them). ROIs become label values through the site's mapping by ROI name; ROIs it does not name (organs at
risk, body outline, ...) are not labels and are left out.

No maintained library fits: rt-utils (last release 2023) pulls OpenCV for its polygon fill; highdicom reads but
does not rasterize RTSTRUCT. The fill here is a few lines of numpy.
"""

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from data_prep.dicom.series import LPS_TO_RAS, DicomSeries
from data_prep.errors import CaseError
from data_prep.volume import Volume

SLICE_TOLERANCE_VOXELS = 0.25
"""A contour lies on slice k when its points are within this fraction of the slice spacing of k."""


def referenced_series(ds: Dataset) -> set[str]:
    """SeriesInstanceUIDs of the image series an RTSTRUCT's contours were drawn on."""
    return {
        str(series.SeriesInstanceUID)
        for frame in ds.get("ReferencedFrameOfReferenceSequence", [])
        for study in frame.get("RTReferencedStudySequence", [])
        for series in study.get("RTReferencedSeriesSequence", [])
        if "SeriesInstanceUID" in series
    }


def read_rtstruct(path: Path, series: DicomSeries, roi_labels: Mapping[str, int]) -> Volume:
    """Return the uint8 label map, (i, j, k) like ``series.volume``, with the same affine.

    ``roi_labels``: ROI name (lower case) -> label value. Raises CaseError naming the file when it cannot be read,
    does not reference the series, has no ROI named in the mapping, or has a contour that is not on a slice.
    """
    ds = _read(path)
    if series.series_instance_uid not in referenced_series(ds):
        raise CaseError(f"{path} does not reference the series in {series.folder}")
    names = {int(roi.ROINumber): str(roi.get("ROIName", "")) for roi in ds.get("StructureSetROISequence", [])}
    if not roi_labels:
        raise CaseError(
            f"{path}: RTSTRUCT labels need a mapping of ROI names to label values ([labels]"
            f" rtstruct-rois in site.toml); ROIs in this file: {sorted(names.values())}"
        )
    labelled = {n: roi_labels[name.casefold()] for n, name in names.items() if name.casefold() in roi_labels}
    if not labelled:
        raise CaseError(
            f"{path}: none of its ROIs {sorted(names.values())} is named in the site's mapping"
            f" {sorted(roi_labels)} ([labels] rtstruct-rois in site.toml)"
        )
    shape = series.volume.array.shape
    to_voxel = np.linalg.inv(LPS_TO_RAS @ series.volume.affine)  # LPS mm -> (i, j, k)
    label = np.zeros(shape, dtype=np.uint8)
    for roi in ds.get("ROIContourSequence", []):
        number = int(roi.ReferencedROINumber)
        if number not in labelled:
            continue
        mask = _roi_mask(roi, to_voxel, shape, path, names[number])
        clash = mask & (label != 0) & (label != labelled[number])
        if clash.any():
            raise CaseError(
                f"{path}: ROI '{names[number]}' overlaps an ROI with another label value at"
                f" {int(clash.sum())} voxel(s); a voxel can hold one label only"
            )
        label[mask] = labelled[number]
    return Volume(array=label, affine=series.volume.affine)


def polygon_mask(shape: tuple[int, int], vertices: np.ndarray) -> np.ndarray:
    """Boolean (i, j) mask of the voxel centres inside the closed polygon ``vertices`` ((n, 2) in voxel units)."""
    mask = np.zeros(shape, dtype=bool)
    lo = np.maximum(np.floor(vertices.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(vertices.max(axis=0)).astype(int), np.array(shape) - 1)
    if np.any(hi < lo):
        return mask
    ii, jj = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    inside = np.zeros(ii.shape, dtype=bool)
    x, y = vertices[:, 0], vertices[:, 1]
    for x1, y1, x2, y2 in zip(x, y, np.roll(x, -1), np.roll(y, -1)):
        if y1 == y2:
            continue
        crosses = (y1 > jj) != (y2 > jj)
        inside ^= crosses & (ii < x1 + (jj - y1) * (x2 - x1) / (y2 - y1))
    mask[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1] = inside
    return mask


def _read(path: Path) -> Dataset:
    try:
        ds = pydicom.dcmread(path)
    except PermissionError as e:
        raise CaseError(f"{path}: permission denied: this user cannot read the file") from e
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as e:
        raise CaseError(f"{path}: cannot read as DICOM: {e}") from e
    if ds.get("Modality") != "RTSTRUCT":
        raise CaseError(f"{path}: Modality is {ds.get('Modality')!r}, expected an RTSTRUCT")
    return ds


def _roi_mask(
    roi: Dataset, to_voxel: np.ndarray, shape: tuple[int, ...], path: Path, name: str
) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for number, contour in enumerate(roi.get("ContourSequence", []), start=1):
        if contour.get("ContourGeometricType", "CLOSED_PLANAR") != "CLOSED_PLANAR":
            continue  # points and open lines enclose no volume
        points = np.asarray([float(v) for v in contour.ContourData], dtype=float).reshape(-1, 3)
        voxels = (to_voxel[:3, :3] @ points.T + to_voxel[:3, 3:4]).T
        k = float(np.round(voxels[:, 2].mean()))
        if np.abs(voxels[:, 2] - k).max() > SLICE_TOLERANCE_VOXELS:
            raise CaseError(
                f"{path}: contour {number} of ROI '{name}' does not lie on an image slice (slice"
                f" index {voxels[:, 2].min():.2f} to {voxels[:, 2].max():.2f}); it was drawn on"
                " another grid"
            )
        if not 0 <= k < shape[2]:
            raise CaseError(
                f"{path}: contour {number} of ROI '{name}' lies outside the image (slice {k:.0f} of"
                f" {shape[2]})"
            )
        mask[:, :, int(k)] ^= polygon_mask(shape[:2], voxels[:, :2])
    return mask
