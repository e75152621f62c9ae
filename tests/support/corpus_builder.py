"""Real DICOM and NIfTI files for ingestion tests: good cases and a corpus of malformed or unusual exports.

Everything is written by pydicom, highdicom and nibabel into a folder the test owns (tmp_path). Volumes are
small synthetic heads (about 20 voxels per axis at 4 mm) so that a whole corpus is written and checked in seconds.
"""

import dataclasses
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import (
    BasicTextSRStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    RTPlanStorage,
    RTStructureSetStorage,
    generate_uid,
)

from data_prep.dicom.series import LPS_TO_RAS
from data_prep.synth.federation import SynthCase, make_case
from data_prep.synth.profiles import site_profiles
from data_prep.synth.writers import write_dicom_seg, write_dicom_series, write_nifti

SEED = 11
SPACING_MM = (4.0, 4.0, 4.0)
PROFILE = dataclasses.replace(site_profiles("tiny", 2, SEED)[1], spacing_mm=SPACING_MM)
"""A tiny DICOM-site head at 4 mm: about 20 x 23 x 18 voxels."""

RTSTRUCT_ROI = "Tumor"
"""Name of the RTSTRUCT ROI the corpus' site.toml maps to label value 3."""

SITE_TOML = f'[labels]\nrtstruct-rois = {{ "{RTSTRUCT_ROI.lower()}" = 3 }}\n'


def phantom(
    index: int, orientation: str = "LPS", spacing_mm: tuple[float, float, float] = SPACING_MM
) -> SynthCase:
    """Ground truth of synthetic case ``index`` on a grid of ``orientation`` (axis codes, e.g. "PIR")."""
    return make_case(
        dataclasses.replace(PROFILE, orientation=orientation, spacing_mm=spacing_mm), index, SEED
    )


@dataclass(frozen=True)
class DicomCase:
    truth: SynthCase
    slices: list[Path]
    """Image files in k order (slice k of the truth volume)."""
    seg: Path
    datasets: list[Dataset]


def write_dicom_case(
    folder: Path,
    index: int = 0,
    orientation: str = "LPS",
    *,
    with_seg: bool = True,
    spacing_mm: tuple[float, float, float] = SPACING_MM,
) -> DicomCase:
    """A CT series (+ DICOM-SEG) of phantom ``index`` in ``folder``; UIDs depend on the folder's name."""
    truth = phantom(index, orientation, spacing_mm)
    folder.mkdir(parents=True)
    datasets = write_dicom_series(folder, truth.image, case_id=f"{folder.name}-{index}", seed=SEED)
    by_uid = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in folder.iterdir()}
    slices = [by_uid[str(ds.SOPInstanceUID)] for ds in datasets]
    seg = write_dicom_seg(folder, datasets, truth.label.array, seed=SEED) if with_seg else folder / "none"
    return DicomCase(truth, slices, seg, datasets)


def rewrite(path: Path, change, transfer_syntax: str | None = None) -> None:
    """Read ``path``, apply ``change(ds)``, write it back (with another transfer syntax if given)."""
    ds = pydicom.dcmread(path)
    change(ds)
    if transfer_syntax is not None:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.save_as(path, enforce_file_format=True)


def compress_series(slices: Sequence[Path], transfer_syntax: str) -> None:
    """Re-encode every slice: RLE, JPEG-LS, JPEG 2000 (pixel codecs) or deflate / big endian (file encodings)."""
    for path in slices:
        ds = pydicom.dcmread(path)
        if transfer_syntax in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
            ds.compress(transfer_syntax, generate_instance_uid=False)
        elif transfer_syntax == ExplicitVRBigEndian:
            ds.PixelData = ds.pixel_array.astype(">i2").tobytes()  # pydicom writes OW bytes as they are
            ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        else:
            ds.file_meta.TransferSyntaxUID = transfer_syntax
        pydicom.dcmwrite(path, ds, enforce_file_format=True)  # save_as refuses to change endianness


def write_enhanced_case(folder: Path, index: int = 0) -> DicomCase:
    """One enhanced (legacy-converted) multi-frame CT file and a SEG referencing its frames."""
    case = write_dicom_case(folder, index, with_seg=False)
    legacy = [pydicom.dcmread(p) for p in case.slices]
    image = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=legacy,
        series_instance_uid=generate_uid(entropy_srcs=[folder.name, "mf"]),
        series_number=2,
        sop_instance_uid=generate_uid(entropy_srcs=[folder.name, "mf-sop"]),
        instance_number=1,
    )
    for path in case.slices:
        path.unlink()
    path = folder / "ENHANCED"
    image.save_as(path, enforce_file_format=True)
    positions = [
        [float(v) for v in g.PlanePositionSequence[0].ImagePositionPatient]
        for g in image.PerFrameFunctionalGroupsSequence
    ]
    k_of = {tuple(np.round(ds.ImagePositionPatient, 3)): k for k, ds in enumerate(case.datasets)}
    frames = [k_of[tuple(np.round(p, 3))] for p in positions]
    seg = write_dicom_seg(folder, [image], case.truth.label.array[:, :, frames], seed=SEED)
    return DicomCase(case.truth, [path], seg, [image])


def write_seg_with_segments(
    folder: Path, datasets: Sequence[Dataset], label: np.ndarray, segments: dict[int, str]
) -> Path:
    """A BINARY SEG whose segment numbers are ``segments`` (number -> label text): ``label`` is a label map (i, j, k)
    of segment numbers, or one boolean mask per segment (i, j, k, segment), which may overlap."""
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=text,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, text in sorted(segments.items())
    ]
    seg = hd.seg.Segmentation(
        source_images=list(datasets),
        pixel_array=np.ascontiguousarray(np.swapaxes(label, 0, 2)),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(entropy_srcs=[folder.name, "seg"]),
        series_number=100,
        sop_instance_uid=generate_uid(entropy_srcs=[folder.name, "seg-sop"]),
        instance_number=1,
        manufacturer="tests",
        manufacturer_model_name="corpus",
        software_versions="0",
        device_serial_number="0",
    )
    path = folder / "SEG-CUSTOM"
    seg.save_as(path, enforce_file_format=True)
    return path


def write_rtstruct(folder: Path, datasets: Sequence[Dataset], rois: dict[str, list[np.ndarray]]) -> Path:
    """An RTSTRUCT on the series ``datasets``: ROI name -> closed planar contours, each (n, 3) LPS mm."""
    first = datasets[0]
    ds = Dataset()
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[folder.name, "rtstruct"])
    ds.Modality = "RTSTRUCT"
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID"):
        setattr(ds, keyword, first.get(keyword, ""))
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[folder.name, "rtstruct-series"])
    ds.StructureSetLabel = "corpus"
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = first.FrameOfReferenceUID
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired, customary)
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ContourImageSequence = [_image_reference(d) for d in datasets]
    study.RTReferencedSeriesSequence = [series]
    frame_ref.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame_ref]
    ds.StructureSetROISequence, ds.ROIContourSequence = [], []
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ROIGenerationAlgorithm = number, name, "MANUAL"
        roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
        ds.StructureSetROISequence.append(roi)
        roi_contour = Dataset()
        roi_contour.ReferencedROINumber = number
        roi_contour.ContourSequence = []
        for points in contours:
            contour = Dataset()
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [f"{v:.4f}" for v in np.asarray(points, float).ravel()]
            roi_contour.ContourSequence.append(contour)
        ds.ROIContourSequence.append(roi_contour)
    return _save(ds, folder / "RTSTRUCT")


def square_contour(
    dataset: Dataset, corner_ij: tuple[float, float], size_ij: tuple[float, float]
) -> np.ndarray:
    """A rectangle in the plane of slice ``dataset``, in its (i, j) voxel coordinates, as (4, 3) LPS mm."""
    origin = np.array([float(v) for v in dataset.ImagePositionPatient])
    row = np.array([float(v) for v in dataset.ImageOrientationPatient[:3]]) * float(dataset.PixelSpacing[1])
    col = np.array([float(v) for v in dataset.ImageOrientationPatient[3:]]) * float(dataset.PixelSpacing[0])
    (i, j), (di, dj) = corner_ij, size_ij
    return np.array(
        [origin + a * row + b * col for a, b in ((i, j), (i + di, j), (i + di, j + dj), (i, j + dj))]
    )


def write_non_image(path: Path, sop_class: str, modality: str, study_uid: str) -> Path:
    """A DICOM object without pixels (a text report, an RT plan)."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = (
        sop_class,
        generate_uid(entropy_srcs=[str(path)]),
        modality,
    )
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid(entropy_srcs=[str(path), "series"])
    ds.PatientID = "corpus"
    return _save(ds, path)


def _image_reference(dataset: Dataset) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = dataset.SOPClassUID, dataset.SOPInstanceUID
    return ref


def _save(ds: Dataset, path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def write_nifti_case(
    site: Path,
    case_id: str,
    index: int,
    orientation: str = "LAS",
    image: np.ndarray | None = None,
    label: np.ndarray | None = None,
    label_affine: np.ndarray | None = None,
) -> SynthCase:
    """imagesTr/<case_id>.nii.gz and labelsTr/<case_id>.nii.gz of phantom ``index`` (or the arrays given)."""
    truth = phantom(index, orientation)
    for sub in ("imagesTr", "labelsTr"):
        (site / sub).mkdir(parents=True, exist_ok=True)
    write_nifti(
        site / "imagesTr" / f"{case_id}.nii.gz",
        truth.image.array if image is None else image,
        truth.image.affine,
    )
    write_nifti(
        site / "labelsTr" / f"{case_id}.nii.gz",
        truth.label.array if label is None else label,
        truth.label.affine if label_affine is None else label_affine,
    )
    return truth


@dataclass(frozen=True)
class Expected:
    """What ``site check`` must say about one corpus entry."""

    kind: str
    """What is malformed or unusual about it."""
    case_id: str | None
    """The case it shows up as, or None when it shows up as a file that is not used."""
    status: str
    """usable | excluded | ignored (a file no case uses)."""
    reason: str
    """Text the case's reason (excluded), a remark (usable) or the file's reason (ignored) must contain."""
    path: str | None = None
    """For ignored files: the path relative to the data folder."""


def build_corpus(root: Path) -> list[Expected]:
    """Write the corpus into ``root`` (must not exist) and return what site check must find.

    Good cases (NIfTI, DICOM + SEG, DICOM + RTSTRUCT, compressed and big-endian series, enhanced multi-frame)
    sit beside broken ones. The RTSTRUCT case needs ``SITE_TOML`` as the site settings.
    """
    expected: list[Expected] = []

    def add(kind: str, case_id: str | None, status: str, reason: str, path: str | None = None) -> None:
        expected.append(Expected(kind, case_id, status, reason, path))

    # --- NIfTI layout --------------------------------------------------------------------------------------------
    for n in (1, 2):
        write_nifti_case(root, f"good-nifti-{n}", n)
        add("good NIfTI case", f"good-nifti-{n}", "usable", "")
    truth = write_nifti_case(root, "truncated", 3)
    image = root / "imagesTr" / "truncated.nii.gz"
    image.write_bytes(image.read_bytes()[:300])
    add("truncated file", "truncated", "excluded", "imagesTr/truncated.nii.gz: cannot read")
    write_nifti_case(root, "zero-byte", 4)
    (root / "imagesTr" / "zero-byte.nii.gz").write_bytes(b"")
    add("zero-byte file", "zero-byte", "excluded", "imagesTr/zero-byte.nii.gz: empty file (0 bytes)")
    write_nifti_case(root, "all-nan", 5, image=np.full(truth.image.array.shape, np.nan, np.float32))
    add("all-NaN NIfTI", "all-nan", "excluded", "imagesTr/all-nan.nii.gz: all voxels are NaN or infinite")
    write_nifti_case(root, "two-d", 6, image=truth.image.array[:, :, 0], label=truth.label.array[:, :, 0])
    add("2-D image where 3-D is expected", "two-d", "excluded", "found a 2-D image")
    four_d = np.stack([truth.image.array] * 3, axis=-1)
    write_nifti_case(root, "four-d", 7, image=four_d)
    add(
        "4-D NIfTI",
        "four-d",
        "excluded",
        "imagesTr/four-d.nii.gz: expected one 3-D volume, found a 4-D image",
    )
    write_nifti_case(root, "label-wrong-shape", 8, label=phantom(8).label.array[:-2])
    add(
        "label of the wrong shape",
        "label-wrong-shape",
        "excluded",
        "but labelsTr/label-wrong-shape.nii.gz has shape (18, 23, 18)",
    )
    shifted = phantom(9).label.affine.copy()
    shifted[:3, 3] += [6.0, 0.0, 0.0]
    write_nifti_case(root, "label-shifted", 9, label_affine=shifted)
    add(
        "label with a shifted affine",
        "label-shifted",
        "excluded",
        "imagesTr/label-shifted.nii.gz and labelsTr/label-shifted.nii.gz lie on different grids",
    )
    outside = phantom(10).label.array.copy()
    outside[outside == 2] = 4
    outside[0, 0, 0] = 7
    write_nifti_case(root, "label-values", 10, label=outside)
    add(
        "label values outside the mapping",
        "label-values",
        "excluded",
        "label values [4, 7] are not in the label",
    )
    write_nifti_case(root, "label-empty", 11, label=np.zeros_like(outside))
    add("empty label", "label-empty", "excluded", "labelsTr/label-empty.nii.gz: empty label")
    write_nifti_case(root, "unreadable", 12)
    os.chmod(root / "imagesTr" / "unreadable.nii.gz", 0)
    add("unreadable permissions", "unreadable", "excluded", "imagesTr/unreadable.nii.gz: permission denied")
    write_nifti_case(root, "no-label", 13)
    (root / "labelsTr" / "no-label.nii.gz").unlink()
    add("image without label", "no-label", "excluded", "imagesTr/no-label.nii.gz has no label")
    _write_absurd_nifti(root / "imagesTr" / "absurd-header.nii", root / "labelsTr" / "absurd-header.nii")
    add(
        "absurd dimensions in a NIfTI header",
        "absurd-header",
        "excluded",
        "volume of 30000x30000x30000 = 27,000,000,000,000 voxels exceeds the site's limit",
    )
    os.symlink("self-loop.nii.gz", root / "imagesTr" / "self-loop.nii.gz")
    add("symbolic link to itself", None, "ignored", "symbolic link loop", "imagesTr/self-loop.nii.gz")

    # --- DICOM, one folder per patient ----------------------------------------------------------------------------
    write_dicom_case(root / "good-dicom", 20)
    add("good DICOM case (CT + SEG)", "good-dicom", "usable", "")
    case = write_dicom_case(root / "rtstruct", 21, with_seg=False)
    middle = len(case.slices) // 2
    contours = [
        square_contour(case.datasets[k], (6.5, 7.5), (5.0, 4.0)) for k in range(middle - 1, middle + 2)
    ]
    write_rtstruct(root / "rtstruct", case.datasets, {RTSTRUCT_ROI: contours, "Brain": contours[:1]})
    add("RTSTRUCT label", "rtstruct", "usable", "")
    for name, syntax in (
        ("jpeg2000", JPEG2000Lossless),
        ("jpeg-ls", JPEGLSLossless),
        ("rle", RLELossless),
        ("deflate", DeflatedExplicitVRLittleEndian),
        ("big-endian", ExplicitVRBigEndian),
    ):
        # OpenJPEG's 6 wavelet levels need at least 32 pixels a side: finer in-plane spacing for that one
        case = write_dicom_case(
            root / name, 22, spacing_mm=(2.0, 2.0, 4.0) if name == "jpeg2000" else SPACING_MM
        )
        compress_series(case.slices, syntax)
        add(f"{name} series", name, "usable", "")
    write_enhanced_case(root / "enhanced-multiframe", 23)
    add("enhanced multi-frame image (single-file series)", "enhanced-multiframe", "usable", "")

    case = write_dicom_case(root / "truncated-slice", 24)
    cut = case.slices[3]
    cut.write_bytes(cut.read_bytes()[:-200])
    add(
        "truncated slice (pixel data cut short)",
        "truncated-slice",
        "excluded",
        f"truncated-slice/{cut.name}: cannot decode the pixel data",
    )
    case = write_dicom_case(root / "zero-byte-in-series", 25)
    (root / "zero-byte-in-series" / "EMPTY").write_bytes(b"")
    add(
        "zero-byte file beside a good series",
        None,
        "ignored",
        "empty file (0 bytes)",
        "zero-byte-in-series/EMPTY",
    )
    add("good case beside a zero-byte file", "zero-byte-in-series", "usable", "")
    case = write_dicom_case(root / "no-pixel-data", 26)
    rewrite(case.slices[2], lambda ds: delattr(ds, "PixelData"))
    add(
        "missing pixel data",
        "no-pixel-data",
        "excluded",
        f"no-pixel-data/{case.slices[2].name}: no pixel data (the PixelData element is missing)",
    )
    report_folder = root / "reports"
    report_folder.mkdir()
    study = str(case.datasets[0].StudyInstanceUID)
    write_non_image(report_folder / "REPORT", BasicTextSRStorage, "SR", study)
    write_non_image(report_folder / "PLAN", RTPlanStorage, "RTPLAN", study)
    add(
        "non-image DICOM: report",
        None,
        "ignored",
        "Basic Text SR Storage (Modality SR) holds no image",
        "reports/REPORT",
    )
    add(
        "non-image DICOM: RT plan",
        None,
        "ignored",
        "RT Plan Storage (Modality RTPLAN) holds no image",
        "reports/PLAN",
    )
    case = write_dicom_case(root / "duplicated-slice", 27)
    copy = root / "duplicated-slice" / "COPY"
    shutil.copy(case.slices[5], copy)
    rewrite(copy, lambda ds: setattr(ds, "SOPInstanceUID", generate_uid(entropy_srcs=["duplicate"])))
    add("duplicated slice", "duplicated-slice", "excluded", "duplicated slice at")
    case = write_dicom_case(root / "missing-slice", 28)
    case.slices[6].unlink()
    add("missing slice", "missing-slice", "excluded", "missing slice(s): gap of 8.000 mm")
    case = write_dicom_case(root / "uneven-spacing", 29)
    for k, path in enumerate(case.slices):
        rewrite(path, lambda ds, k=k: _shift(ds, [0.0, 0.0, 0.3 * k * k / len(case.slices)]))
    add("inconsistent slice spacing", "uneven-spacing", "excluded", "uneven slice spacing")
    case = write_dicom_case(root / "gantry-tilt", 30)
    for k, path in enumerate(case.slices):
        rewrite(path, lambda ds, k=k: _shift(ds, [0.0, 0.7 * k, 0.0]))
    add("gantry tilt", "gantry-tilt", "excluded", "gantry tilt of")
    case = write_dicom_case(root / "two-series", 31)
    scout = write_dicom_case(root / "scout-tmp", 31, with_seg=False)
    for path in scout.slices[:4]:
        rewrite(
            path,
            lambda ds: (
                setattr(ds, "StudyInstanceUID", case.datasets[0].StudyInstanceUID),
                setattr(ds, "SeriesDescription", "scout"),
            ),
        )
        shutil.move(path, root / "two-series" / f"SCOUT-{path.name}")
    shutil.rmtree(root / "scout-tmp")
    add(
        "two series mixed in one folder",
        "two-series",
        "usable",
        "2 image series in the study; chose CT 'Head phantom'",
    )
    case = write_dicom_case(root / "segment-unmapped", 32, with_seg=False)
    label = case.truth.label.array.copy()
    label[label == 2] = 4
    write_seg_with_segments(
        root / "segment-unmapped",
        case.datasets,
        label,
        {1: "necrosis", 2: "edema", 3: "enhancing", 4: "vessel"},
    )
    add(
        "SEG segment outside the mapping",
        "segment-unmapped",
        "excluded",
        "segment(s) 4 'vessel' have no label value in the site's segment mapping",
    )
    case = write_dicom_case(root / "absurd-rows", 33)
    for path in case.slices:
        rewrite(path, lambda ds: (setattr(ds, "Rows", 60000), setattr(ds, "Columns", 60000)))
    add("absurd dimensions in DICOM headers", "absurd-rows", "excluded", f"60000x60000x{len(case.slices)} = ")
    write_dicom_case(root / "no-seg", 34, with_seg=False)
    add("image series without a label", "no-seg", "excluded", "no label: no DICOM-SEG or RTSTRUCT references")
    (root / "good-dicom" / "README.txt").write_text("exported by PACS")
    add("non-DICOM file mixed in", None, "ignored", "not a DICOM file", "good-dicom/README.txt")
    os.symlink("..", root / "good-dicom" / "parent-link")
    add(
        "symbolic link loop (folder)",
        None,
        "ignored",
        "symbolic link loop or repeated link",
        "good-dicom/parent-link",
    )
    return expected


def _shift(ds: Dataset, delta_lps: Sequence[float]) -> None:
    ds.ImagePositionPatient = [f"{float(v) + d:.4f}" for v, d in zip(ds.ImagePositionPatient, delta_lps)]


def _write_absurd_nifti(image: Path, label: Path) -> None:
    """A NIfTI header claiming 30000³ voxels in front of a few bytes: must be refused before any read."""
    for path in (image, label):
        header = nib.Nifti1Header()
        header.set_data_dtype(np.uint8)
        header.set_data_shape((30000, 30000, 30000))
        header.set_sform(LPS_TO_RAS, code=1)
        header["vox_offset"] = 352
        path.write_bytes(header.binaryblock + b"\0" * 4 + b"\1" * 64)
