"""Read a DICOM-SEG into a label map on the grid of the image series it segments.

Segments become label values through the site's mapping (default: segment number N -> label value N; see
ingest_settings.py). Frames are matched to image slices by the SEG's references to their source instances (and
frame numbers, for an enhanced multi-frame source), so the label map shares the series' shape and affine exactly.
SEGs may be sparse: slices without any segment have no frame and read as 0. FRACTIONAL segments count where
their value is at least 0.5.
"""

from collections.abc import Mapping
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.errors import InvalidDicomError

from data_prep.dicom.series import DicomSeries
from data_prep.errors import CaseError
from data_prep.volume import Volume

FRACTION_THRESHOLD = 0.5
"""A voxel belongs to a FRACTIONAL segment where the stored fraction (0-1) is at least this."""


def read_dicom_seg(seg_path: Path, series: DicomSeries, segment_labels: Mapping[int, int]) -> Volume:
    """Return the uint8 label map, (i, j, k) like ``series.volume``, with the same affine.

    ``segment_labels``: segment number -> label value. Raises CaseError naming the SEG (and the series folder)
    when the SEG cannot be read, does not reference this series, has frames that do not fit its slices, holds a
    segment without a label value, or has overlapping segments with different label values.
    """
    seg = _segread(seg_path)
    referenced = seg.get_source_image_uids()  # (study, series, SOP instance) of every source image
    instances = {sop_uid for _, series_uid, sop_uid in referenced if series_uid == series.series_instance_uid}
    if not instances:
        raise CaseError(
            f"{seg_path} does not segment the series in {series.folder}: its frames reference"
            f" {len({s for _, s, _ in referenced})} other series"
        )
    missing = instances - set(series.sop_instance_uids)
    if missing:
        raise CaseError(
            f"{seg_path} references {len(missing)} slice(s) of the series in {series.folder} that are not among"
            f" its {len(set(series.sop_instance_uids))} files (incomplete export?)"
        )
    nx, ny, _ = series.volume.array.shape
    if (int(seg.Rows), int(seg.Columns)) != (ny, nx):
        raise CaseError(
            f"{seg_path}: frames are {seg.Rows}x{seg.Columns} but the slices in {series.folder} are {ny}x{nx}"
        )
    unmapped = [n for n in seg.segment_numbers if n not in segment_labels]
    if unmapped:
        names = [f"{n} '{seg.get_segment_description(n).segment_label}'" for n in unmapped]
        raise CaseError(
            f"{seg_path}: segment(s) {', '.join(names)} have no label value in the site's segment mapping"
            f" {dict(segment_labels)}; add them under [labels] seg-segments in site.toml"
        )
    masks = _segment_masks(seg, seg_path, series)  # (k, row j, column i, segment)
    label = np.zeros(masks.shape[:3], dtype=np.uint8)
    for index, number in enumerate(seg.segment_numbers):
        value = segment_labels[number]
        mask = masks[..., index]
        clash = mask & (label != 0) & (label != value)
        if clash.any():
            raise CaseError(
                f"{seg_path}: segment {number} overlaps another segment with a different label value at"
                f" {int(clash.sum())} voxel(s); a voxel can hold one label only"
            )
        label[mask] = value
    # (slice k, row j, column i) -> (i, j, k)
    return Volume(array=np.ascontiguousarray(label.transpose(2, 1, 0)), affine=series.volume.affine)


def _segread(seg_path: Path) -> hd.seg.Segmentation:
    try:
        return hd.seg.segread(seg_path)
    except PermissionError as e:
        raise CaseError(f"{seg_path}: permission denied: this user cannot read the file") from e
    except (InvalidDicomError, OSError, AttributeError, ValueError, KeyError, TypeError, EOFError) as e:
        raise CaseError(f"{seg_path}: cannot read as DICOM-SEG: {e}") from e


def _segment_masks(seg: hd.seg.Segmentation, seg_path: Path, series: DicomSeries) -> np.ndarray:
    """Boolean (k, rows, columns, segments) in the order of ``seg.segment_numbers``."""
    options = {
        "segment_numbers": seg.segment_numbers,
        "assert_missing_frames_are_empty": True,
        "skip_overlap_checks": True,
        "dtype": np.float32,
    }
    sources = {uid for uid, _ in series.source_frames}
    try:
        if len(sources) == 1 and len(series.source_frames) > 1:  # an enhanced multi-frame source
            uid = next(iter(sources))
            pixels = seg.get_pixels_by_source_frame(
                source_sop_instance_uid=uid,
                source_frame_numbers=[n for _, n in series.source_frames],
                **options,
            )
        else:
            pixels = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=list(series.sop_instance_uids), **options
            )
    except (
        ValueError,
        RuntimeError,
        KeyError,
        AttributeError,
    ) as e:  # frames not tied to slices, bad encoding
        raise CaseError(f"{seg_path}: cannot map its frames onto the slices in {series.folder}: {e}") from e
    return pixels >= FRACTION_THRESHOLD
