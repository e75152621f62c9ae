"""Geometry round trip: one synthetic head written as NIfTI and as DICOM series (axial, sagittal, coronal, oblique)
loads to the same RAS voxels and affine."""

import dataclasses

import nibabel as nib
import numpy as np
import pytest
from corpus_builder import PROFILE, SEED

from data_prep.discovery import discover_cases
from data_prep.loading import load_case
from data_prep.synth.federation import make_case
from data_prep.synth.writers import RESCALE_SLOPE, write_dicom_seg, write_dicom_series, write_nifti
from data_prep.volume import Volume

NOISELESS = dataclasses.replace(PROFILE, noise_sd=0.0)  # noise is drawn in stored order; anatomy is not


def as_ras(volume: Volume) -> Volume:
    """The same voxels re-indexed so that i, j, k run towards R, A, S (nibabel's canonical orientation)."""
    ornt = nib.orientations.io_orientation(volume.affine)
    array = nib.orientations.apply_orientation(volume.array, ornt)
    return Volume(array, volume.affine @ nib.orientations.inv_ornt_aff(ornt, volume.array.shape))


def write_case(site, orientation: str, image_format: str, affine_change: np.ndarray | None = None) -> None:
    truth = make_case(dataclasses.replace(NOISELESS, orientation=orientation), 0, SEED)
    image, label = truth.image, truth.label
    if affine_change is not None:
        image = Volume(image.array, affine_change @ image.affine)
        label = Volume(label.array, affine_change @ label.affine)
    if image_format == "nifti":
        write_nifti(site / "imagesTr" / "case.nii.gz", image.array, image.affine)
        write_nifti(site / "labelsTr" / "case.nii.gz", label.array, label.affine)
    else:
        folder = site / "case"
        folder.mkdir()
        datasets = write_dicom_series(folder, image, case_id=f"case-{orientation}", seed=SEED)
        write_dicom_seg(folder, datasets, label.array, seed=SEED)


def load_only_case(site):
    (case,) = discover_cases(site)
    return load_case(case)


@pytest.fixture(scope="module")
def from_nifti(tmp_path_factory):
    site = tmp_path_factory.mktemp("nifti")
    (site / "imagesTr").mkdir()
    (site / "labelsTr").mkdir()
    write_case(site, "RAS", "nifti")
    return load_only_case(site)


@pytest.mark.parametrize(
    ("plane", "orientation"), [("axial", "LPS"), ("sagittal", "PIR"), ("coronal", "LIP")]
)
def test_dicom_series_loads_to_the_same_ras_voxels_as_nifti(tmp_path, from_nifti, plane, orientation):
    write_case(tmp_path, orientation, "dicom")
    image, label = load_only_case(tmp_path)
    assert image.orientation == orientation  # as stored
    nifti_image, nifti_label = from_nifti
    half_voxel = 0.5 * min(nifti_image.spacing_mm)
    for dicom, nifti in ((as_ras(image), nifti_image), (as_ras(label), nifti_label)):
        assert dicom.array.shape == nifti.array.shape
        assert np.abs(dicom.affine - nifti.affine).max() < half_voxel
        np.testing.assert_allclose(dicom.affine, nifti.affine, atol=1e-3)  # in fact exact to rounding
    np.testing.assert_array_equal(as_ras(label).array, nifti_label.array)
    np.testing.assert_allclose(as_ras(image).array, nifti_image.array, atol=RESCALE_SLOPE / 2 + 1e-3)


def test_oblique_dicom_series_has_the_affine_nibabel_gives_the_same_volume(tmp_path):
    angle = np.radians(17.0)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]  # about the S axis
    nifti_site, dicom_site = tmp_path / "nifti", tmp_path / "dicom"
    for sub in ("imagesTr", "labelsTr"):
        (nifti_site / sub).mkdir(parents=True)
    dicom_site.mkdir()
    write_case(nifti_site, "LPS", "nifti", rotation)
    write_case(dicom_site, "LPS", "dicom", rotation)
    (nifti_image, nifti_label), (dicom_image, dicom_label) = (
        load_only_case(nifti_site),
        load_only_case(dicom_site),
    )
    np.testing.assert_allclose(dicom_image.affine, nifti_image.affine, atol=1e-3)
    np.testing.assert_array_equal(dicom_label.array, nifti_label.array)
    np.testing.assert_allclose(dicom_image.array, nifti_image.array, atol=RESCALE_SLOPE / 2 + 1e-3)
    assert dicom_image.ras_shape == nifti_image.ras_shape
