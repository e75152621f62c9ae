"""Write synthetic cases the way a hospital would export them: NIfTI files, or a CT or MR series plus a DICOM-SEG.

The DICOM geometry is the exact inverse of ``data_prep.dicom.series``: slice k of the volume is written with
ImagePositionPatient = LPS position of voxel (0, 0, k), row direction = affine axis i, column direction = axis j,
pixel (row j, column i) = voxel (i, j, k). A grid whose axis k points against cross(i, j) therefore reads back
with k reversed (same voxels in the world). UIDs, dates and file names are derived from the seed, and gzip
headers carry no time or name, so the same seed writes the same bytes.
"""

import datetime
import gzip
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DSfloat

from data_prep.dicom.segment_codes import ANATOMIC_REGION, SEGMENT_CATEGORY, SEGMENT_TYPES
from data_prep.dicom.series import LPS_TO_RAS
from data_prep.volume import Volume, checked_affine
from models.shared.atomic import atomic_write_bytes
from models.shared.labels import LABEL_NAMES

RESCALE_SLOPE = 0.25
"""CT modality value = stored int16 * RESCALE_SLOPE + RESCALE_INTERCEPT; a non-unit slope exercises readers."""

RESCALE_INTERCEPT = -1024.0

STORABLE_RANGE = (
    np.iinfo(np.int16).min * RESCALE_SLOPE + RESCALE_INTERCEPT,
    np.iinfo(np.int16).max * RESCALE_SLOPE + RESCALE_INTERCEPT,
)
"""Modality values representable in signed 16-bit storage; values outside are clipped."""

MANUFACTURER = "OncoFed synthetic"

NIFTI_GZIP_LEVEL = 1
"""gzip level of .nii.gz files (nibabel's default: fast)."""

MODALITY_ATTRIBUTES: dict[str, dict[str, object]] = {
    "CT": {"SOPClassUID": CTImageStorage, "KVP": "", "RescaleType": "HU"},
    "MR": {
        "SOPClassUID": MRImageStorage,
        "ScanningSequence": "GR",
        "SequenceVariant": "SP",
        "ScanOptions": "",
        "MRAcquisitionType": "3D",
        "EchoTime": "",
        "EchoTrainLength": "",
        "RepetitionTime": "",
        "MagneticFieldStrength": "3",
    },
}
"""What a series of each modality carries besides the common attributes (SOP class and its modality module)."""


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Write ``array`` (i, j, k) with its voxel->RAS mm ``affine`` as sform and qform, atomically (temp + rename).

    ``path`` ends in .nii.gz (compressed) or .nii. The gzip stream has no file name or time in its header, so the
    same arrays give the same bytes.
    """
    img = nib.Nifti1Image(array, affine)
    img.header.set_sform(affine, code="scanner")
    img.header.set_qform(affine, code="scanner")
    img.header.set_xyzt_units(xyz="mm")
    data = img.to_bytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=NIFTI_GZIP_LEVEL, mtime=0)
    atomic_write_bytes(path, data)


def write_dicom_series(
    folder: Path, image: Volume, *, case_id: str, seed: int, modality: str = "CT"
) -> list[Dataset]:
    """Write ``image`` as a CT or MR Image Storage series (``modality``), one file per k slice, with random file
    names in ``folder``.

    Values are stored as int16 with RESCALE_SLOPE/RESCALE_INTERCEPT (clipped to STORABLE_RANGE).
    ``case_id`` becomes PatientID; it and ``seed`` determine all UIDs, dates and file names.
    Returns the written datasets in k order (what ``write_dicom_seg`` needs as sources).
    """
    affine = LPS_TO_RAS @ checked_affine(image.affine, case_id)  # voxel -> LPS mm
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    row, col = affine[:3, 0] / spacing[0], affine[:3, 1] / spacing[1]
    rng = np.random.default_rng([seed, *case_id.encode()])
    uid = _uid_factory(seed, case_id)
    study_date = (
        datetime.date(2019, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 5 * 365)))
    ).strftime("%Y%m%d")
    clipped = np.clip(image.array, *STORABLE_RANGE)
    stored = np.round((clipped - RESCALE_INTERCEPT) / RESCALE_SLOPE).astype("<i2")
    common = {
        **MODALITY_ATTRIBUTES[modality],
        "PatientName": f"Synthetic^{case_id}",
        "PatientID": case_id,
        "PatientBirthDate": "",
        "PatientSex": "O",
        "PatientIdentityRemoved": "YES",
        "DeidentificationMethod": "synthetic phantom, no patient data",  # required when identity is removed
        "StudyInstanceUID": uid("study"),
        "StudyDate": study_date,
        "StudyTime": "093000",
        "ContentDate": study_date,
        "ContentTime": "093000",
        "ReferringPhysicianName": "",
        "StudyID": "1",
        "AccessionNumber": "",
        "StudyDescription": "Synthetic brain tumor phantom",
        "Modality": modality,
        "SeriesInstanceUID": uid("series"),
        "SeriesNumber": 1,
        "SeriesDescription": "Head phantom",
        "PatientPosition": "HFS",
        "FrameOfReferenceUID": uid("frame-of-reference"),
        "PositionReferenceIndicator": "",
        "Manufacturer": MANUFACTURER,
        "ImageType": [
            "DERIVED",
            "SECONDARY",
            "AXIAL",
        ],  # CT value 3 is AXIAL or LOCALIZER, whatever the plane
        "AcquisitionNumber": 1,
        "PixelSpacing": [_ds(spacing[1]), _ds(spacing[0])],  # between rows, between columns
        "SliceThickness": _ds(spacing[2]),
        "ImageOrientationPatient": [_ds(v) for v in (*row, *col)],
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": image.array.shape[1],
        "Columns": image.array.shape[0],
        "BitsAllocated": 16,
        "BitsStored": 16,
        "HighBit": 15,
        "PixelRepresentation": 1,
        "RescaleIntercept": _ds(RESCALE_INTERCEPT),
        "RescaleSlope": _ds(RESCALE_SLOPE),
    }
    n = image.array.shape[2]
    datasets = []
    for k in range(n):
        ds = Dataset()
        for keyword, value in common.items():
            setattr(ds, keyword, value)
        ds.SOPInstanceUID = uid(f"slice-{k}")
        ds.InstanceNumber = n - k  # exporters number slices freely; here top-down
        ds.ImagePositionPatient = [_ds(v) for v in affine[:3, :3] @ [0, 0, k] + affine[:3, 3]]
        ds.PixelData = stored[:, :, k].T.tobytes()  # (rows j, columns i)
        ds.file_meta = _file_meta(ds)
        pydicom.dcmwrite(_free_name(folder, rng), ds, enforce_file_format=True)
        datasets.append(ds)
    return datasets


def write_dicom_seg(
    folder: Path, source_datasets: Sequence[Dataset], label: np.ndarray, *, seed: int
) -> Path:
    """Write ``label`` (i, j, k, uint8, on the grid of the series) as a BINARY DICOM-SEG; return its path.

    ``source_datasets[k]`` is the image slice of ``label[:, :, k]``. Segments 1-3 are always described
    (segment number == label value, even if absent in this case); frames without any segment are omitted.
    """
    study_uid = str(source_datasets[0].StudyInstanceUID)
    uid = _uid_factory(seed, study_uid)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=value,
            segment_label=LABEL_NAMES[value],
            segmented_property_category=SEGMENT_CATEGORY,
            segmented_property_type=code,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            anatomic_regions=[ANATOMIC_REGION],
        )
        for value, code in sorted(SEGMENT_TYPES.items())
    ]
    seg = hd.seg.Segmentation(
        source_images=list(source_datasets),
        pixel_array=np.ascontiguousarray(label.transpose(2, 1, 0)),  # (i, j, k) -> (frame k, row j, column i)
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=uid("seg-series"),
        series_number=100,
        sop_instance_uid=uid("seg-instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="oncofed synth",
        software_versions=version("oncofed"),
        device_serial_number="0",
        content_label="TUMOR",
        content_description="Brain tumor sub-regions",
    )
    _make_reproducible(seg, source_datasets[0], uid("dimension-organization"))
    path = _free_name(folder, np.random.default_rng([seed, *study_uid.encode()]))
    seg.save_as(path, enforce_file_format=True)
    return path


def _make_reproducible(seg: Dataset, source: Dataset, dimension_organization_uid: str) -> None:
    """Replace what highdicom draws afresh on every call (the current time, a random UID) with values derived from
    the source series, so the same seed writes the same SEG bytes."""
    for keyword in ("InstanceCreation", "Content"):
        setattr(seg, f"{keyword}Date", source.StudyDate)
        setattr(seg, f"{keyword}Time", source.StudyTime)
    for item in seg.get("ContributingEquipmentSequence", []):
        item.ContributionDateTime = f"{source.StudyDate}{source.StudyTime}"
    for item in (*seg.DimensionOrganizationSequence, *seg.DimensionIndexSequence):
        item.DimensionOrganizationUID = dimension_organization_uid


def _uid_factory(seed: int, key: str) -> Callable[[str], str]:
    """UIDs that depend only on (seed, key, name): reproducible output."""
    return lambda name: generate_uid(entropy_srcs=[str(seed), key, name])


def _ds(value: float) -> DSfloat:
    """A decimal string that fits DICOM's 16 characters."""
    return DSfloat(float(value), auto_format=True)


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _free_name(folder: Path, rng: np.random.Generator) -> Path:
    """A random 8-hex-digit file name not yet used in ``folder``, as exporters write (no extension)."""
    while (path := Path(folder) / f"{int(rng.integers(16**8)):08X}").exists():
        pass
    return path
