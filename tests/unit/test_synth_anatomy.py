"""`synth --preset anatomy`: MNI152 cases with grown gliomas; where the labels lie, formats, reproducibility."""

import dataclasses
import hashlib

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage

from data_prep.discovery import discover_cases
from data_prep.loading import load_case
from data_prep.synth.anatomy import render_anatomy
from data_prep.synth.federation import make_case, write_site
from data_prep.synth.phantom import sampling_grid
from data_prep.synth.profiles import default_sites, site_profiles
from data_prep.synth.writers import RESCALE_SLOPE
from models.shared.labels import EDEMA, ENHANCING, NECROTIC_CORE

PROFILES = site_profiles("anatomy", default_sites("anatomy"), seed=0)


def test_three_sites_of_ten_cases_at_about_two_mm_in_the_other_presets_formats():
    assert [p.name for p in PROFILES] == ["hospital-a", "hospital-b", "hospital-c"]
    assert [p.n_cases for p in PROFILES] == [10, 10, 10]
    assert [(p.image_format, p.orientation) for p in PROFILES] == [
        ("nifti", "LAS"),
        ("dicom", "LPS"),
        ("nifti", "RAS"),
    ]
    assert PROFILES[1].dicom_modality == "MR"
    assert all(p.anatomy == "mni152" for p in PROFILES)
    assert all(1.5 <= s <= 2.5 for p in PROFILES for s in p.spacing_mm)
    assert PROFILES[0].bias_strength == max(p.bias_strength for p in PROFILES) >= 0.3  # LAS: the bias field
    assert len({(p.intensity_scale, p.intensity_offset, p.noise_sd) for p in PROFILES}) == 3


@pytest.fixture(scope="module")
def samples():
    """Two cases of each site, with the anatomy they were drawn from."""
    drawn = []
    for profile in PROFILES:
        shape, affine = sampling_grid(profile)
        for index in range(2):
            rng = np.random.default_rng([0, index, *profile.name.encode()])
            drawn.append((profile, render_anatomy(profile, shape, affine, rng)))
    return drawn


def test_every_case_has_one_or_two_tumors_with_all_three_sub_regions(samples):
    for _, sample in samples:
        assert {NECROTIC_CORE, EDEMA, ENHANCING} <= set(np.unique(sample.label).tolist())
        solid = np.isin(sample.label, (NECROTIC_CORE, ENHANCING))  # edema's white-matter fingers may part
        assert 1 <= ndimage.label(solid, np.ones((3, 3, 3)))[1] <= 2


def test_labels_lie_inside_the_brain_the_image_shows(samples):
    """The brain is found from the image alone (smoothed, above the background's offset), not from the generator."""
    for profile, sample in samples:
        smooth = ndimage.gaussian_filter(sample.image, 1.0)
        threshold = profile.intensity_offset + 0.1 * 420.0 * profile.intensity_scale
        brain = ndimage.binary_fill_holes(smooth > threshold)
        inside = brain[sample.label > 0].mean()
        assert inside > 0.99, (profile.name, inside)


def test_edema_follows_white_matter(samples):
    """Edema lies mostly in white matter, far more than the brain as a whole (about a third of it)."""
    for profile, sample in samples:
        edema = sample.label == EDEMA
        in_white_matter = (sample.white_matter[edema] > 0.5).mean()
        brain_share = (sample.white_matter[sample.brain] > 0.5).mean()
        assert in_white_matter > 0.75 and in_white_matter > brain_share + 0.3, (profile.name, in_white_matter)


def test_sites_see_different_poses_and_deformations(samples):
    """No two cases share a brain: their brain masks differ beyond the tumors (pose, size, deformation)."""
    a, b = (sample.brain for profile, sample in samples if profile.name == "hospital-a")
    assert (a ^ b).mean() > 0.02


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One case of each site, written twice with seed 0 into different folders."""
    roots = [tmp_path_factory.mktemp(f"anatomy{i}") for i in range(2)]
    for root in roots:
        for profile in PROFILES:
            write_site(root, dataclasses.replace(profile, n_cases=1), seed=0)
    return roots


def test_the_same_seed_writes_the_same_bytes(written):
    first, again = (
        {str(p.relative_to(root)): _digest(p) for p in root.rglob("*") if p.is_file()} for root in written
    )
    assert len(first) > 30 and first == again  # file names, DICOM UIDs, dates and voxels alike


def test_each_site_is_written_in_its_format_and_reads_back_as_generated(written):
    root = written[0]
    for profile in PROFILES:
        (case,) = discover_cases(root / profile.name)
        image, label = load_case(case)
        truth = make_case(profile, 0, 0)
        np.testing.assert_array_equal(label.array, truth.label.array)
        np.testing.assert_allclose(image.array, truth.image.array, atol=RESCALE_SLOPE / 2 + 1e-3)
        if profile.image_format == "nifti":
            stored = nib.load(root / profile.name / "imagesTr" / f"{truth.case_id}.nii.gz")
            assert "".join(nib.aff2axcodes(stored.affine)) == profile.orientation
            np.testing.assert_allclose(stored.header.get_zooms(), profile.spacing_mm)
        else:
            files = [
                pydicom.dcmread(p, stop_before_pixels=True)
                for p in (root / profile.name).rglob("*")
                if p.is_file()
            ]
            modalities = sorted({f.Modality for f in files})
            assert modalities == ["MR", "SEG"] and case.modality == "MR"
            assert sum(f.Modality == "SEG" for f in files) == 1


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
