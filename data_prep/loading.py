"""Load one case: its image and its label map on the same grid, every check that needs voxels done here."""

from pathlib import Path

import numpy as np

from data_prep.dicom.rtstruct import read_rtstruct
from data_prep.dicom.seg_reader import read_dicom_seg
from data_prep.dicom.series import DicomSeries, read_dicom_series
from data_prep.discovery import CaseFiles
from data_prep.errors import CaseError
from data_prep.ingest_settings import DEFAULT_INGEST, IngestSettings
from data_prep.nifti import read_nifti
from data_prep.volume import Volume, on_grid_of
from models.shared.labels import LABEL_NAMES


def load_case(case: CaseFiles, settings: IngestSettings = DEFAULT_INGEST) -> tuple[Volume, Volume]:
    """Read ``(image, label)``: float32 image and uint8 label map (values 0-3) on the same grid (RAS affine).

    A label on the image's grid in another axis order is re-indexed onto it (volume.on_grid_of). Raises CaseError,
    naming the file(s), when a file is unreadable or too large, the two grids differ, or the label is empty or holds
    values outside the label convention.
    """
    image, series = load_image(case, settings)
    image_source = case.image[0] if series is None else series.folder
    if case.label is None:
        raise CaseError(f"{image_source}: no label for case {case.case_id}")
    if case.label_format == "nifti":
        label = read_nifti(case.label, settings.max_voxels)
    elif series is None:
        raise CaseError(
            f"{case.label}: a DICOM {case.label_format.upper()} label needs a DICOM image series,"
            f" but the image is {image_source}"
        )
    elif case.label_format == "seg":
        label = read_dicom_seg(case.label, series, settings.seg_segments)
    else:
        label = read_rtstruct(case.label, series, settings.rtstruct_rois)
    label = on_grid_of(label, image, case.label, image_source)
    return image, _label_map(label, case.label)


def load_image(
    case: CaseFiles, settings: IngestSettings = DEFAULT_INGEST
) -> tuple[Volume, DicomSeries | None]:
    """The case's image (float32, RAS affine) and, for DICOM, the series it was read from (its instances, for a
    DICOM-SEG that references them). Raises CaseError naming the file or series folder."""
    if case.image_format == "nifti":
        return read_nifti(case.image[0], settings.max_voxels), None
    series = read_dicom_series(case.image, settings.max_voxels)
    return series.volume, series


def _label_map(label: Volume, path: Path) -> Volume:
    """The label map as uint8, after checking every value is a known label (whole numbers 0-3) and one is not 0."""
    values = np.unique(label.array)
    unknown = [f"{v:g}" for v in values.tolist() if v not in LABEL_NAMES]
    if unknown:
        raise CaseError(
            f"{path}: label values [{', '.join(unknown[:10])}] are not in the label convention {sorted(LABEL_NAMES)}"
            " (0 background, 1 necrotic core, 2 edema, 3 enhancing); relabel the file or map its segments"
        )
    if values.max(initial=0) == 0:
        raise CaseError(
            f"{path}: empty label: no voxel holds a tumor label (1-3); a case without a labelled"
            " tumor cannot be used for training or validation"
        )
    return Volume(array=label.array.astype(np.uint8), affine=label.affine)
