"""The real DICOM files shipped inside pydicom (CT and MR in several transfer syntaxes, multi-frame, SEG, RT objects,
the DICOMDIR tree): each is read, or refused with a reason that says what is wrong."""

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from data_prep.dicom.index import index_dicom_files
from data_prep.dicom.series import read_dicom_series
from data_prep.discovery import discover
from data_prep.errors import CaseError

SAMPLES = Path(pydicom.__file__).parent / "data" / "test_files"

EXPECTED = {
    "CT_small.dcm": "only 1 slice: a 2-D image, where a 3-D volume is expected",
    "MR_small_RLE.dcm": "only 1 slice",
    "rtdose.dcm": "multi-frame image (15 frames) without per-frame positions",
    "examples_ybr_color.dcm": "colour image (YBR_FULL_422, 3 samples per pixel)",
    "JPEG2000.dcm": "required attribute ImagePositionPatient is missing",
    "rtplan.dcm": "RT Plan Storage (Modality RTPLAN) holds no image",
    "reportsi.dcm": "Modality SR) holds no image",
    "rtstruct.dcm": "not a DICOM file (no 'DICM' marker",
    "no_meta.dcm": "not a DICOM file",
    "badVR.dcm": "NumberOfFrames '1A' is not a number",
    "liver_1frame.dcm": "the image series it labels is not in the export",
    "dicomdirtests/DICOMDIR": "DICOMDIR (an index of the export)",
    "dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000000": "image object without Rows/Columns",
    "README.txt": "not a DICOM file",
}
"""Outcomes for a few notable files (the others are checked for having one)."""

LOSSLESS_MR = [
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_implicit.dcm",
    "MR_small_padded.dcm",
]


def outcome(path: Path, scratch: Path) -> str:
    """'read' or the reason a site would see for ``path`` exported on its own."""
    index = index_dicom_files([path])
    if index.ignored:
        return index.ignored[0].reason
    if index.labels:
        folder = scratch / path.name
        folder.mkdir()
        shutil.copy(path, folder / path.name)
        (excluded,) = discover(folder).excluded
        return excluded.reason
    (series,) = index.series.values()
    try:
        read_dicom_series(series.files)
    except CaseError as e:
        return str(e)
    return "read"


def test_every_shipped_file_is_read_or_refused_with_a_reason(tmp_path):
    files = sorted(p for p in SAMPLES.rglob("*") if p.is_file())
    outcomes = {str(p.relative_to(SAMPLES)): outcome(p, tmp_path) for p in files}
    assert len(outcomes) > 150
    for name, expected in EXPECTED.items():
        assert expected in outcomes[name], (name, outcomes[name])
    for name, text in outcomes.items():
        assert text == "read" or len(text) > 25, (name, text)  # a sentence, not a code


def two_slice_series(sample: Path, folder: Path) -> list[Path]:
    """The sample as slice 0 and a copy of it one slice further along the normal: a 3-D series of a real file."""
    folder.mkdir()
    paths = []
    for k in range(2):
        ds = pydicom.dcmread(sample)
        row, col = (
            np.array(ds.ImageOrientationPatient[:3], float),
            np.array(ds.ImageOrientationPatient[3:], float),
        )
        position = np.array(ds.ImagePositionPatient, float) + k * 5.0 * np.cross(row, col)
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[sample.name, str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        paths.append(folder / f"{k}.dcm")
        pydicom.dcmwrite(paths[-1], ds)  # keeps the transfer syntax and the encoded pixel data as they are
    return paths


@pytest.mark.parametrize("name", LOSSLESS_MR)
def test_real_encoded_mr_samples_decode_to_the_same_values(tmp_path, name):
    reference = read_dicom_series(two_slice_series(SAMPLES / "MR_small.dcm", tmp_path / "reference"))
    series = read_dicom_series(two_slice_series(SAMPLES / name, tmp_path / "sample"))
    np.testing.assert_array_equal(series.volume.array, reference.volume.array)
    np.testing.assert_allclose(series.volume.affine, reference.volume.affine, atol=1e-4)


def test_truncated_real_sample_is_refused_naming_the_file(tmp_path):
    paths = two_slice_series(SAMPLES / "MR_truncated.dcm", tmp_path / "truncated")
    with pytest.raises(CaseError, match=r"0.dcm: cannot decode the pixel data \(Explicit VR Little Endian\)"):
        read_dicom_series(paths)


def test_dicomdir_tree_is_scanned_without_its_dicomdir(tmp_path):
    found = discover(SAMPLES / "dicomdirtests")
    assert not found.cases  # no labels in the tree
    reasons = {e.case_id: e.reason for e in found.excluded}
    assert (
        "no CT/MR image series in the study, found CR 'Cervical LAT'" in reasons["77654033#1"]
    )  # X-rays only
    assert (
        "no label: no DICOM-SEG or RTSTRUCT references the image series CT 'Routine Brain'"
        in reasons["77654033/CT2"]
    )
    assert {"98892001", "98892003#1", "98892003#2", "98892003#3"} <= set(reasons)  # studies sharing a folder
    dicomdirs = [p for p in found.ignored if p.path.name.startswith("DICOMDIR")]
    assert len(dicomdirs) == 8 and all("DICOMDIR" in p.reason for p in dicomdirs)
    index = index_dicom_files(sorted(p for p in (SAMPLES / "dicomdirtests" / "98892001" / "CT5N").iterdir()))
    (series,) = index.series.values()
    volume = read_dicom_series(series.files).volume
    assert volume.array.shape == (16, 16, 5) and volume.orientation == "LPS"


def test_jpeg_extended_sample_decodes_through_pylibjpeg(tmp_path):
    """JPGExtended.dcm has no patient geometry; given one, its 12-bit JPEG Extended frame is decoded."""
    ds = pydicom.dcmread(SAMPLES / "JPGExtended.dcm")
    ds.ImageOrientationPatient, ds.ImagePositionPatient, ds.PixelSpacing = (
        [1, 0, 0, 0, 1, 0],
        [0, 0, 0],
        [1, 1],
    )
    pydicom.dcmwrite(tmp_path / "JPGExtended.dcm", ds)
    series = read_dicom_series(two_slice_series(tmp_path / "JPGExtended.dcm", tmp_path / "series"))
    assert series.volume.array.shape == (256, 1024, 2)
    assert series.volume.array.std() > 0
