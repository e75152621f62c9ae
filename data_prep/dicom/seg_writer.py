"""Write a predicted label map as a DICOM Segmentation (highdicom) that references the series it was predicted on.

The inverse of dicom_seg.read_dicom_seg: frame k of the SEG holds slice k of the label map (i, j, k) as (row j,
column i), tied to its source instance (or source frame, for an enhanced multi-frame series), so its per-frame
positions are the source slices' positions. BINARY segmentation, empty frames omitted.

Segments: one per label value present, numbered 1, 2, ... in label order (DICOM requires consecutive numbers from
1), so segment number and label value differ when a label is absent; ``SegWritten.segments`` gives the mapping
(site.toml ``[labels] seg-segments`` to read the SEG back). Codes: segment_codes.py (SNOMED CT). A label map with no
tumor voxel has no segment to write: a SEG must hold at least one, so none is written (NoSegment says why).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from data_prep.dicom.segment_codes import ANATOMIC_REGION, SEGMENT_CATEGORY, SEGMENT_TYPES
from data_prep.dicom.series import DicomSeries
from models.shared.atomic import atomic_path
from models.shared.labels import LABEL_NAMES

SERIES_DESCRIPTION = "OncoFed tumor segmentation - research use, not for diagnosis"
CONTENT_DESCRIPTION = "Predicted tumor sub-regions; research use, not for diagnosis"
SERIES_NUMBER = 9100
"""Series number of predicted SEGs: high, so viewers list them after the acquired series."""


class NoSegment(Exception):
    """No SEG can be written for this prediction; the message says why (the NIfTI label map is still written)."""


@dataclass(frozen=True)
class Algorithm:
    """Who made the segmentation: written into every segment's Segment Algorithm Identification."""

    name: str
    version: str
    model_sha256: str
    manufacturer: str = "OncoFed"


@dataclass(frozen=True)
class SegWritten:
    path: Path
    series_instance_uid: str
    sop_instance_uid: str
    segments: dict[int, int]
    """Segment number -> label value."""


def write_prediction_seg(
    path: Path, label: np.ndarray, series: DicomSeries, files: Sequence[Path], algorithm: Algorithm
) -> SegWritten:
    """Write ``label`` (uint8, (i, j, k) on ``series.volume``'s grid) as a DICOM-SEG at ``path``, atomically.

    ``files`` are the series' files (their headers give the source instances). Raises NoSegment when the label
    map holds no tumor voxel or the series is split over several multi-frame files (highdicom takes one).
    """
    if label.shape != series.volume.array.shape:
        raise ValueError(
            f"label map of shape {label.shape} for a series of shape {series.volume.array.shape}"
        )
    present = [int(v) for v in np.unique(label) if v]
    if not present:
        raise NoSegment(
            "no tumor voxel predicted: a DICOM-SEG must hold at least one segment, so none was written"
        )
    segments = {number: value for number, value in enumerate(present, start=1)}
    numbered = np.zeros(max(LABEL_NAMES) + 1, dtype=np.uint8)
    for number, value in segments.items():
        numbered[value] = number
    sources, frames = _sources(numbered[label], series, files)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_description(number, value, algorithm) for number, value in segments.items()],
        series_instance_uid=generate_uid(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=algorithm.manufacturer,
        manufacturer_model_name=algorithm.name[:64],
        software_versions=algorithm.version,
        device_serial_number="0",  # software, not a device: DICOM still requires a value
        content_label="TUMOR",
        content_description=CONTENT_DESCRIPTION,
    )
    seg.SeriesDescription = SERIES_DESCRIPTION
    with atomic_path(path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return SegWritten(path, str(seg.SeriesInstanceUID), str(seg.SOPInstanceUID), segments)


def _sources(
    numbered: np.ndarray, series: DicomSeries, files: Sequence[Path]
) -> tuple[list[Dataset], np.ndarray]:
    """The source datasets and the SEG frames (source frame order, (rows j, columns i)) of a segment-number map."""
    headers = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        headers.setdefault(str(ds.SOPInstanceUID), ds)
    instances = [uid for uid, _ in series.source_frames]
    by_slice = np.ascontiguousarray(numbered.transpose(2, 1, 0))  # (i, j, k) -> (k, row j, column i)
    if len(set(instances)) == len(instances):  # one instance per slice: frames follow the slices
        return [headers[uid] for uid in instances], by_slice
    if len(set(instances)) == 1:  # one enhanced multi-frame instance: frames in its own frame order
        source = headers[instances[0]]
        frames = np.zeros((int(source.NumberOfFrames), *by_slice.shape[1:]), dtype=by_slice.dtype)
        for k, (_, number) in enumerate(series.source_frames):
            frames[number - 1] = by_slice[k]
        return [source], frames
    raise NoSegment(
        f"the series in {series.folder} is split over {len(set(instances))} multi-frame files; a DICOM-SEG can"
        " reference one multi-frame source image only, so none was written"
    )


def _description(number: int, value: int, algorithm: Algorithm) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=LABEL_NAMES[value],
        segmented_property_category=SEGMENT_CATEGORY,
        segmented_property_type=SEGMENT_TYPES[value],
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm.name[:64],
            family=codes.cid7162.ArtificialIntelligence,
            version=algorithm.version[:64],
            source=algorithm.manufacturer,
            parameters={"model_sha256": algorithm.model_sha256},
        ),
        anatomic_regions=[ANATOMIC_REGION],
    )
