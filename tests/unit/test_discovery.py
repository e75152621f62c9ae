"""Finding cases in both site layouts, and the errors a site operator sees."""

import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
from corpus_builder import rewrite, write_dicom_case

from data_prep.discovery import CaseFiles, discover, discover_cases
from data_prep.errors import CaseError, SiteDataError
from data_prep.ingest_settings import DEFAULT_INGEST, IngestSettings
from data_prep.loading import load_case
from data_prep.synth.federation import write_federation
from data_prep.synth.writers import write_nifti
from site_app.settings.site_file import read_site_settings


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
    images = sorted((site / "imagesTr").iterdir())  # case id = image file name without .nii.gz, in order
    assert [c.case_id for c in cases] == [p.name.removesuffix(".nii.gz") for p in images] and len(cases) == 6
    assert all(c.image_format == "nifti" and c.image == (p,) for c, p in zip(cases, images))
    assert all(c.label == site / "labelsTr" / p.name for c, p in zip(cases, images))
    image, label = load_case(cases[0])
    assert image.array.dtype == np.float32 and label.array.dtype == np.uint8
    assert image.array.shape == label.array.shape and set(np.unique(label.array)) <= {0, 1, 2, 3}
    assert snapshot(site) == before  # the data folder is only read


def test_dicom_layout(federation):
    site = federation[1]
    before = snapshot(site)
    cases = discover_cases(site)
    folders = sorted(p.name for p in site.iterdir() if p.is_dir())  # case id = the case folder's name
    assert [c.case_id for c in cases] == folders and len(cases) == 5
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


def test_nifti_image_without_label_is_excluded_with_its_reason(tmp_path):
    for sub in ("imagesTr", "labelsTr"):
        (tmp_path / sub).mkdir()
    for name in ("c1.nii.gz", "c2.nii", "._c1.nii.gz"):  # "._*": macOS resource fork, ignored
        write_nifti(tmp_path / "imagesTr" / name, np.zeros((4, 4, 4), np.float32), np.eye(4))
    write_nifti(tmp_path / "labelsTr" / "c1.nii.gz", np.zeros((4, 4, 4), np.uint8), np.eye(4))
    found = discover(tmp_path)
    assert [c.case_id for c in found.cases] == ["c1"]
    assert [e.case_id for e in found.excluded] == ["c2"]
    assert "c2.nii has no label" in found.excluded[0].reason


def test_dicom_case_without_seg_is_excluded_with_its_reason(federation, tmp_path):
    site = tmp_path / "site"
    shutil.copytree(federation[1], site)
    cases = discover_cases(site)
    victim = cases[1]
    victim.label.unlink()  # the case's DICOM-SEG
    found = discover(site)
    assert [c.case_id for c in found.cases] == [c.case_id for c in cases if c != victim]
    assert [e.case_id for e in found.excluded] == [victim.case_id]
    assert (
        "no label: no DICOM-SEG or RTSTRUCT references the image series CT 'Head phantom'"
        in found.excluded[0].reason
    )


def test_label_values_outside_the_convention_are_a_case_error(tmp_path):
    write_nifti(tmp_path / "image.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
    write_nifti(tmp_path / "label.nii.gz", np.full((4, 4, 4), 4, np.uint8), np.eye(4))  # BraTS <= 2020 used 4
    case = CaseFiles("c", (tmp_path / "image.nii.gz",), tmp_path / "label.nii.gz", "nifti", "nifti")
    with pytest.raises(CaseError, match=r"label values \[4\]"):
        load_case(case)


def test_image_and_label_on_different_grids_are_a_case_error(tmp_path):
    write_nifti(tmp_path / "image.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
    nib.save(
        nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.diag([2.0, 2.0, 2.0, 1.0])),
        tmp_path / "label.nii.gz",
    )
    case = CaseFiles("c", (tmp_path / "image.nii.gz",), tmp_path / "label.nii.gz", "nifti", "nifti")
    with pytest.raises(CaseError, match="different grids"):
        load_case(case)


def two_labelled_series(site):
    """One study holding a 'T1' series (18 slices) and a 'FLAIR' series (15 slices), each with its own SEG."""
    t1 = write_dicom_case(site / "patient" / "t1", 0)
    flair = write_dicom_case(site / "patient" / "flair", 1)
    study = t1.datasets[0].StudyInstanceUID
    for path in flair.slices[:15]:
        rewrite(
            path,
            lambda ds: (setattr(ds, "StudyInstanceUID", study), setattr(ds, "SeriesDescription", "FLAIR")),
        )
    for path in flair.slices[15:]:
        path.unlink()
    rewrite(flair.seg, lambda ds: setattr(ds, "StudyInstanceUID", study))
    return t1, flair


def test_series_rules_choose_the_case_image(tmp_path):
    t1, flair = two_labelled_series(tmp_path)
    (largest,) = discover(tmp_path).cases  # default: the largest labelled series
    assert (
        largest.case_id == "patient" and largest.image == tuple(sorted(t1.slices)) and largest.label == t1.seg
    )
    (by_name,) = discover(tmp_path, IngestSettings(series_description="(?i)flair")).cases
    assert by_name.image == tuple(sorted(flair.slices[:15])) and by_name.label == flair.seg
    found = discover(tmp_path, IngestSettings(modalities=("MR",)))
    assert not found.cases
    assert (
        "no MR image series in the study, found CT 'FLAIR' (15 frames), CT 'Head phantom'"
        in found.excluded[0].reason
    )


def test_site_toml_sets_the_rules(tmp_path):
    (tmp_path / "site.toml").write_text(
        '[series]\nmodalities = ["mr"]\ndescription = "(?i)t1.*post"\n'
        '[labels]\nseg-segments = { "1" = 1, "2" = 1, "4" = 3 }\nrtstruct-rois = { "GTV" = 3 }\n'
        "[limits]\nmax-voxels = 1_000_000\n"
    )
    settings = read_site_settings(tmp_path / "site.toml")
    assert settings.modalities == ("MR",) and settings.matches_description("T1 POST gd")
    assert dict(settings.seg_segments) == {1: 1, 2: 1, 4: 3} and dict(settings.rtstruct_rois) == {"gtv": 3}
    assert settings.max_voxels == 1_000_000
    assert read_site_settings(None) == DEFAULT_INGEST  # no file: the defaults
