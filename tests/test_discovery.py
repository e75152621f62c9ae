"""Finding cases in both site layouts, and the errors a site operator sees."""

import logging
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest

from data_prep.discovery import CaseFiles, discover_cases, load_case
from data_prep.errors import CaseError, SiteDataError
from data_prep.synth.federation import write_federation
from data_prep.synth.writers import write_nifti


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """A tiny two-site federation: hospital-a NIfTI (6 cases), hospital-b DICOM (5 cases)."""
    return write_federation(tmp_path_factory.mktemp("fed"), n_sites=2, seed=3, preset="tiny")


def snapshot(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_nifti_layout(federation):
    site = federation[0]
    before = snapshot(site)
    cases = discover_cases(site)
    assert [c.case_id for c in cases] == [f"hospital-a-{i:03d}" for i in range(1, 7)]
    assert all(c.image_format == "nifti" and len(c.image) == 1 for c in cases)
    assert cases[0].label == site / "labelsTr" / "hospital-a-001.nii.gz"
    image, label = load_case(cases[0])
    assert image.array.dtype == np.float32 and label.array.dtype == np.uint8
    assert image.array.shape == label.array.shape and set(np.unique(label.array)) <= {0, 1, 2, 3}
    assert snapshot(site) == before  # the data folder is only read


def test_dicom_layout(federation):
    site = federation[1]
    before = snapshot(site)
    cases = discover_cases(site)
    assert [c.case_id for c in cases] == [f"hospital-b-{i:03d}" for i in range(1, 6)]
    case = cases[0]
    assert case.image_format == "dicom" and pydicom.dcmread(case.label).Modality == "SEG"
    assert all(pydicom.dcmread(p, stop_before_pixels=True).Modality == "CT" for p in case.image)
    image, label = load_case(case)
    assert image.array.shape == label.array.shape and image.array.shape[2] == len(case.image)
    assert label.array.dtype == np.uint8 and label.array.any()
    assert snapshot(site) == before


def test_dicom_case_folder_may_nest_files_and_hold_other_files(federation, tmp_path):
    site = tmp_path / "site"
    case_dir = site / "patient-1" / "study" / "series"
    shutil.copytree(federation[1] / "hospital-b-001", case_dir)
    (site / "patient-1" / "notes.txt").write_text("not DICOM")
    cases = discover_cases(site)
    assert [c.case_id for c in cases] == ["patient-1"]
    assert len(cases[0].image) == len(list(case_dir.iterdir())) - 1


def test_missing_site_folder_names_the_path(tmp_path):
    with pytest.raises(SiteDataError, match=str(tmp_path / "nowhere")):
        discover_cases(tmp_path / "nowhere")


def test_site_path_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SiteDataError, match="not a folder"):
        discover_cases(tmp_path / "file")


def test_empty_site_folder(tmp_path):
    with pytest.raises(SiteDataError, match=f"no cases found in {tmp_path}"):
        discover_cases(tmp_path)


def test_nifti_image_without_label_is_skipped_with_a_warning(tmp_path, caplog):
    for sub in ("imagesTr", "labelsTr"):
        (tmp_path / sub).mkdir()
    for name in ("c1.nii.gz", "c2.nii", "._c1.nii.gz"):  # "._*": macOS resource fork, ignored
        write_nifti(tmp_path / "imagesTr" / name, np.zeros((4, 4, 4), np.float32), np.eye(4))
    write_nifti(tmp_path / "labelsTr" / "c1.nii.gz", np.zeros((4, 4, 4), np.uint8), np.eye(4))
    with caplog.at_level(logging.WARNING, logger="data_prep.discovery"):
        cases = discover_cases(tmp_path)
    assert [c.case_id for c in cases] == ["c1"]
    assert "c2" in caplog.text and "no label" in caplog.text


def test_dicom_case_without_seg_is_skipped_with_a_warning(federation, tmp_path, caplog):
    site = tmp_path / "site"
    shutil.copytree(federation[1], site)
    case_dir = site / "hospital-b-002"
    for path in case_dir.iterdir():
        if pydicom.dcmread(path, stop_before_pixels=True).Modality == "SEG":
            path.unlink()
    with caplog.at_level(logging.WARNING, logger="data_prep.discovery"):
        cases = discover_cases(site)
    assert "hospital-b-002" not in [c.case_id for c in cases] and len(cases) == 4
    assert "no DICOM-SEG" in caplog.text


def test_label_values_outside_the_convention_are_a_case_error(tmp_path):
    write_nifti(tmp_path / "image.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
    write_nifti(tmp_path / "label.nii.gz", np.full((4, 4, 4), 4, np.uint8), np.eye(4))  # BraTS <= 2020 used 4
    case = CaseFiles("c", (tmp_path / "image.nii.gz",), tmp_path / "label.nii.gz", "nifti")
    with pytest.raises(CaseError, match=r"label values \[4\]"):
        load_case(case)


def test_image_and_label_on_different_grids_are_a_case_error(tmp_path):
    write_nifti(tmp_path / "image.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
    nib.save(
        nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.diag([2.0, 2.0, 2.0, 1.0])),
        tmp_path / "label.nii.gz",
    )
    case = CaseFiles("c", (tmp_path / "image.nii.gz",), tmp_path / "label.nii.gz", "nifti")
    with pytest.raises(CaseError, match="different grids"):
        load_case(case)
