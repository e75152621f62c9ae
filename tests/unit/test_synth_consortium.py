"""The consortium preset: one large centre and many small sites that differ in tumor size, contrast, noise, slice
thickness, orientation and format, one with small multifocal tumors; the same seed writes the same bytes."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from data_prep.discovery import discover_cases
from data_prep.loading import load_case
from data_prep.synth.federation import make_case, write_site
from data_prep.synth.profiles import default_sites, site_profiles

PROFILES = site_profiles("consortium", default_sites("consortium"), seed=0)


def test_six_sites_from_a_large_centre_down_to_three_cases():
    assert [p.name for p in PROFILES] == [f"hospital-{c}" for c in "abcdef"]
    assert [p.n_cases for p in PROFILES] == [40, 16, 8, 5, 4, 3]


def test_sites_differ_in_format_orientation_slices_contrast_noise_and_tumor_size():
    assert [p.image_format for p in PROFILES].count("dicom") == 1
    assert {p.dicom_modality for p in PROFILES if p.image_format == "dicom"} == {"MR"}
    assert {p.orientation for p in PROFILES if p.image_format == "nifti"} >= {"RAS", "LAS"}
    assert max(p.spacing_mm[2] for p in PROFILES) >= 4.0 > min(p.spacing_mm[2] for p in PROFILES)
    for field in ("tumor_contrast", "noise_sd", "intensity_scale", "tumor_radius_mm", "orientation"):
        assert len({getattr(p, field) for p in PROFILES}) >= 3, field


def test_exactly_one_site_has_small_multifocal_tumors():
    multifocal = [p for p in PROFILES if p.tumor_count[0] >= 3]
    assert len(multifocal) == 1
    site = multifocal[0]
    assert site.tumor_radius_mm[1] <= min(p.tumor_radius_mm[0] for p in PROFILES if p is not site)
    for index in range(site.n_cases):
        label = make_case(site, index, 0).label.array
        assert ndimage.label(label > 0)[1] >= 2  # separate lesions (neighbours may touch)
    assert ndimage.label(make_case(PROFILES[0], 0, 0).label.array > 0)[1] <= 2


def write_first_cases(out: Path, seed: int) -> tuple[Path, dict[str, bytes]]:
    """The first case of every site (each in its own format), written under `out`: `out` and relative path → bytes."""
    out.mkdir(parents=True, exist_ok=True)
    for profile in PROFILES:
        write_site(out, replace(profile, n_cases=1), seed)
    return out, {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The first case of every site, written twice with seed 0."""
    return [write_first_cases(tmp_path_factory.mktemp(f"run{i}"), 0) for i in range(2)]


def test_the_same_seed_writes_the_same_bytes(written):
    (_, first), (_, again) = written
    assert len(first) > 2 * len(PROFILES) and first == again


def test_each_site_reads_back_in_its_format_with_its_tumors(written):
    out = written[0][0]
    for profile in PROFILES:
        (case,) = discover_cases(out / profile.name)
        assert case.image_format == profile.image_format, profile.name
        assert case.modality in (None, "MR"), case.modality
        _, label = load_case(case)
        truth = make_case(profile, 0, 0)
        np.testing.assert_array_equal(label.array, truth.label.array)
