"""Readers against the generator's ground truth: voxels, and tumor position in RAS millimetres."""

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from data_prep.dicom.seg_reader import read_dicom_seg
from data_prep.dicom.series import read_dicom_series, series_geometry
from data_prep.errors import CaseError
from data_prep.ingest_settings import DEFAULT_SEG_SEGMENTS
from data_prep.nifti import read_nifti
from data_prep.synth.federation import make_case
from data_prep.synth.profiles import site_profiles
from data_prep.synth.writers import RESCALE_SLOPE, write_dicom_seg, write_dicom_series, write_nifti
from data_prep.volume import Volume

SEED = 7
NIFTI_SITE, DICOM_SITE = site_profiles("tiny", 2, SEED)


def centroid_mm(label: Volume) -> np.ndarray:
    """RAS mm centroid of the tumor (label > 0)."""
    index = np.argwhere(label.array > 0).mean(axis=0)
    return label.affine[:3, :3] @ index + label.affine[:3, 3]


def as_ras(volume: Volume) -> Volume:
    """The same voxels re-indexed so that i, j, k run towards R, A, S: compares grids regardless of axis order."""
    ornt = nib.orientations.io_orientation(volume.affine)
    array = nib.orientations.apply_orientation(volume.array, ornt)
    return Volume(array, volume.affine @ nib.orientations.inv_ornt_aff(ornt, volume.array.shape))


def write_dicom_case(folder: Path, orientation: str, index: int = 0):
    """Ground truth of a tiny DICOM-site case on a grid of ``orientation``, written as CT + SEG in ``folder``."""
    profile = dataclasses.replace(DICOM_SITE, orientation=orientation)
    truth = make_case(profile, index, SEED)
    folder.mkdir()
    datasets = write_dicom_series(folder, truth.image, case_id=truth.case_id, seed=SEED)
    seg_path = write_dicom_seg(folder, datasets, truth.label.array, seed=SEED)
    slices = sorted(p for p in folder.iterdir() if p != seg_path)
    return truth, slices, seg_path


# axial; sagittal and coronal with right-handed slice order; sagittal whose k axis reads back reversed
@pytest.mark.parametrize("orientation", ["LPS", "PIR", "LIP", "PIL"])
def test_dicom_series_and_seg_read_back_to_ground_truth(tmp_path, orientation):
    truth, slices, seg_path = write_dicom_case(tmp_path / "case", orientation)
    series = read_dicom_series(slices)
    label = read_dicom_seg(seg_path, series, DEFAULT_SEG_SEGMENTS)

    frames_with_content = sum(np.any(truth.label.array == v, axis=(0, 1)).sum() for v in (1, 2, 3))
    assert (
        int(pydicom.dcmread(seg_path).NumberOfFrames) == frames_with_content
    )  # sparse: empty frames omitted
    image, label, expected_image, expected_label = (
        as_ras(v) for v in (series.volume, label, truth.image, truth.label)
    )
    np.testing.assert_allclose(image.affine, expected_image.affine, atol=1e-4)
    np.testing.assert_array_equal(label.array, expected_label.array)
    np.testing.assert_allclose(image.array, expected_image.array, atol=RESCALE_SLOPE / 2 + 1e-3)
    half_voxel = 0.5 * min(truth.label.spacing_mm)
    assert np.linalg.norm(centroid_mm(label) - centroid_mm(truth.label)) < half_voxel
    assert series.volume.orientation == (orientation if orientation != "PIL" else "PIR")


def test_right_handed_dicom_grid_reads_back_voxel_for_voxel(tmp_path):
    truth, slices, seg_path = write_dicom_case(tmp_path / "case", "PIR")
    series = read_dicom_series(list(reversed(slices)))  # file order must not matter
    np.testing.assert_array_equal(
        read_dicom_seg(seg_path, series, DEFAULT_SEG_SEGMENTS).array, truth.label.array
    )
    np.testing.assert_allclose(series.volume.affine, truth.image.affine, atol=1e-4)
    assert len(series.sop_instance_uids) == truth.label.array.shape[2]


@pytest.mark.parametrize("orientation", ["LAS", "PSR"])
def test_nifti_in_non_ras_orientation_reads_back_to_the_same_ras_centroid(tmp_path, orientation):
    stored = make_case(dataclasses.replace(NIFTI_SITE, orientation=orientation), 0, SEED).label
    reference = make_case(dataclasses.replace(NIFTI_SITE, orientation="RAS"), 0, SEED).label
    write_nifti(tmp_path / "label.nii.gz", stored.array, stored.affine)

    read = read_nifti(tmp_path / "label.nii.gz")
    assert read.orientation == orientation
    np.testing.assert_array_equal(read.array, stored.array)
    np.testing.assert_allclose(read.affine, stored.affine)
    assert np.linalg.norm(centroid_mm(read) - centroid_mm(reference)) < 0.5 * min(read.spacing_mm)


def test_same_phantom_as_nifti_and_as_dicom_gives_the_same_centroid(tmp_path):
    _, slices, seg_path = write_dicom_case(tmp_path / "case", "LPS")
    from_dicom = read_dicom_seg(seg_path, read_dicom_series(slices), DEFAULT_SEG_SEGMENTS)
    nifti_truth = make_case(dataclasses.replace(DICOM_SITE, orientation="RAS", image_format="nifti"), 0, SEED)
    write_nifti(tmp_path / "label.nii.gz", nifti_truth.label.array, nifti_truth.label.affine)
    from_nifti = read_nifti(tmp_path / "label.nii.gz")

    assert from_dicom.orientation == "LPS" and from_nifti.orientation == "RAS"
    assert np.linalg.norm(centroid_mm(from_dicom) - centroid_mm(from_nifti)) < 0.5 * min(
        from_nifti.spacing_mm
    )


def test_seg_of_another_series_is_rejected_naming_both(tmp_path):
    _, slices, _ = write_dicom_case(tmp_path / "one", "LPS", index=0)
    _, _, other_seg = write_dicom_case(tmp_path / "two", "LPS", index=1)
    with pytest.raises(CaseError, match="does not segment") as error:
        read_dicom_seg(other_seg, read_dicom_series(slices), DEFAULT_SEG_SEGMENTS)
    assert str(other_seg) in str(error.value) and str(tmp_path / "one") in str(error.value)


def test_series_with_a_missing_slice_is_rejected(tmp_path):
    _, slices, _ = write_dicom_case(tmp_path / "case", "LPS")
    by_position = sorted(slices, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    del by_position[len(by_position) // 2]
    with pytest.raises(CaseError, match="missing slice"):
        read_dicom_series(by_position)


def test_files_of_two_series_are_rejected_naming_the_folder(tmp_path):
    _, one, _ = write_dicom_case(tmp_path / "one", "LPS", index=0)
    _, two, _ = write_dicom_case(tmp_path / "two", "LPS", index=1)
    with pytest.raises(CaseError, match="SeriesInstanceUID") as error:
        read_dicom_series(one + two[:1])
    assert str(tmp_path) in str(error.value)


def test_series_geometry_sorts_along_the_normal_not_by_input_order():
    positions = np.array([[0.0, 0.0, z] for z in (6.0, -2.0, 2.0, 10.0)])  # LPS mm, axial slices 4 mm apart
    order, affine = series_geometry(positions, [1, 0, 0, 0, 1, 0], [0.5, 0.8], "test")
    assert order.tolist() == [1, 2, 0, 3]
    np.testing.assert_allclose(affine, [[-0.8, 0, 0, 0], [0, -0.5, 0, 0], [0, 0, 4, -2], [0, 0, 0, 1]])


def test_series_geometry_rejects_tilted_slices():
    positions = np.array([[0.0, k * 1.0, k * 4.0] for k in range(4)])  # gantry tilt: slices shift along y
    with pytest.raises(CaseError, match="gantry tilt of 14.04 degrees"):
        series_geometry(positions, [1, 0, 0, 0, 1, 0], [1, 1], "tilted")


def test_nifti_4d_and_sheared_affines_are_case_errors(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), tmp_path / "4d.nii.gz")
    with pytest.raises(CaseError, match="4-D"):
        read_nifti(tmp_path / "4d.nii.gz")
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), sheared), tmp_path / "sheared.nii.gz")
    with pytest.raises(CaseError, match="not orthogonal"):
        read_nifti(tmp_path / "sheared.nii.gz")


def test_unreadable_nifti_is_a_case_error(tmp_path):
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(CaseError, match="broken.nii.gz"):
        read_nifti(tmp_path / "broken.nii.gz")


def test_seg_referencing_slices_missing_from_the_series_is_rejected(tmp_path):
    _, slices, seg_path = write_dicom_case(tmp_path / "case", "LPS")
    by_position = sorted(slices, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    with pytest.raises(CaseError, match="1 slice"):
        read_dicom_seg(
            seg_path, read_dicom_series(by_position[1:]), DEFAULT_SEG_SEGMENTS
        )  # an end slice lost: spacing still regular
