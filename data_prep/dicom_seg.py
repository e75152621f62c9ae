"""Read a DICOM-SEG into a label map on the grid of the image series it segments.

Segment number N becomes label value N (our convention: 1 necrotic core, 2 edema, 3 enhancing; see labels.py).
Frames are matched to image slices by the SEG's references to their SOP Instance UIDs, so the label map shares
the series' shape and affine exactly. SEGs may be sparse: slices without any segment have no frame and read as 0.
"""

from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.errors import InvalidDicomError

from data_prep.dicom_series import DicomSeries
from data_prep.errors import CaseError
from data_prep.volume import Volume


def read_dicom_seg(seg_path: Path, series: DicomSeries) -> Volume:
    """Return the uint8 label map, (i, j, k) like ``series.volume``, with the same affine.

    Raises CaseError naming both the SEG and the series folder when the SEG does not reference this series or
    its frames do not fit the series' slices, and naming the SEG when it cannot be read.
    """
    try:
        seg = hd.seg.segread(seg_path)
    except (InvalidDicomError, OSError, AttributeError, ValueError, KeyError) as e:
        raise CaseError(f"{seg_path}: cannot read as DICOM-SEG: {e}") from e
    referenced = seg.get_source_image_uids()  # (study, series, SOP instance) of every source image
    slices = {sop_uid for _, series_uid, sop_uid in referenced if series_uid == series.series_instance_uid}
    if not slices:
        raise CaseError(
            f"{seg_path} does not segment the series in {series.folder}: it references series"
            f" {sorted({series_uid for _, series_uid, _ in referenced})}, not {series.series_instance_uid}"
        )
    missing = slices - set(series.sop_instance_uids)
    if missing:
        raise CaseError(
            f"{seg_path} references {len(missing)} slice(s) of the series in {series.folder} that are not among"
            f" its {len(series.sop_instance_uids)} files (incomplete export?)"
        )
    nx, ny, _ = series.volume.array.shape
    if (int(seg.Rows), int(seg.Columns)) != (ny, nx):
        raise CaseError(
            f"{seg_path}: frames are {seg.Rows}x{seg.Columns} but the slices in {series.folder} are {ny}x{nx}"
        )
    try:
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=list(series.sop_instance_uids),
            combine_segments=True,
            relabel=False,
            assert_missing_frames_are_empty=True,  # sparse SEG: slices without a frame are background
        )
    except (ValueError, RuntimeError, KeyError) as e:  # overlapping segments, frames not tied to slices
        raise CaseError(f"{seg_path}: cannot map its frames onto the slices in {series.folder}: {e}") from e
    if pixels.max(initial=0) > np.iinfo(np.uint8).max:
        raise CaseError(f"{seg_path}: segment numbers up to {pixels.max()} do not fit a uint8 label map")
    # (slice k, row j, column i) -> (i, j, k)
    return Volume(
        array=np.ascontiguousarray(pixels.transpose(2, 1, 0).astype(np.uint8)), affine=series.volume.affine
    )
