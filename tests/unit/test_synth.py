"""The synthetic federation: site profiles, reproducibility, what is written, and the `synth` command."""

import numpy as np
import pytest
from typer.testing import CliRunner

from data_prep.discovery import discover_cases
from data_prep.loading import load_case
from data_prep.synth.federation import make_case, write_federation
from data_prep.synth.phantom import sampling_grid
from data_prep.synth.profiles import site_profiles
from data_prep.synth.writers import RESCALE_SLOPE
from models.shared.exit_codes import ExitCode
from oncofed_cli import app


def read_all(sites):
    """(case_id, image array, label array) of every case of every site folder, in order."""
    return [(c.case_id, *(v.array for v in load_case(c))) for site in sites for c in discover_cases(site)]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The same tiny federation written twice with seed 0, and once with seed 1."""
    return [
        read_all(write_federation(tmp_path_factory.mktemp(f"fed{i}"), n_sites=2, seed=seed, preset="tiny"))
        for i, seed in enumerate((0, 0, 1))
    ]


def test_same_seed_gives_identical_voxels(written):
    first, again, _ = written
    assert [c[0] for c in first] == [c[0] for c in again]
    for (_, image, label), (_, image_again, label_again) in zip(first, again):
        np.testing.assert_array_equal(image, image_again)
        np.testing.assert_array_equal(label, label_again)


def test_case_ids_are_unique_stable_per_seed_and_what_discovery_finds(written):
    """What synth promises about case ids, whatever their format: unique across the federation, the same for
    the same seed, and discovery finds exactly the cases synth generated."""
    first, again, _ = written
    ids = [c[0] for c in first]
    assert len(set(ids)) == len(ids) == sum(p.n_cases for p in site_profiles("tiny", 2, 0))
    assert [c[0] for c in again] == ids
    profiles = site_profiles("tiny", 2, 0)
    assert set(ids) == {make_case(p, index, 0).case_id for p in profiles for index in range(p.n_cases)}


def test_different_seed_gives_different_cases(written):
    first, _, other = written
    assert not any(np.array_equal(a[2], b[2]) for a, b in zip(first, other))


def test_written_cases_match_the_in_memory_ground_truth(written):
    profiles = site_profiles("tiny", 2, 0)
    cases = written[0]
    assert len(cases) == sum(p.n_cases for p in profiles)
    for profile in profiles:
        for index in range(profile.n_cases):
            truth = make_case(profile, index, 0)
            _, image, label = next(c for c in cases if c[0] == truth.case_id)
            np.testing.assert_array_equal(label, truth.label.array)
            np.testing.assert_allclose(image, truth.image.array, atol=RESCALE_SLOPE / 2 + 1e-3)
            assert label.any() and set(np.unique(label)) <= {0, 1, 2, 3}


def test_profiles_are_non_iid_and_hospital_b_exports_dicom():
    profiles = site_profiles("bench", 4, seed=0)
    assert [p.name for p in profiles] == ["hospital-a", "hospital-b", "hospital-c", "hospital-d"]
    assert [p.image_format for p in profiles] == ["nifti", "dicom", "nifti", "nifti"]
    assert any(p.image_format == "nifti" and p.orientation != "RAS" for p in profiles)
    for field in ("n_cases", "spacing_mm", "orientation", "intensity_scale", "noise_sd", "tumor_radius_mm"):
        assert len({getattr(p, field) for p in profiles}) > 1, field
    assert [p.image_format for p in site_profiles("tiny", 1, seed=0)] == ["nifti"]
    assert [p.n_cases for p in site_profiles("demo", 3, seed=0)] == [24, 12, 6]


def test_tiny_volumes_are_small():
    for profile in site_profiles("tiny", 4, seed=0):
        assert max(sampling_grid(profile)[0]) <= 40


def test_unknown_preset_and_bad_site_counts_are_rejected():
    with pytest.raises(ValueError, match="valid presets: tiny, demo, bench"):
        site_profiles("huge", 2, 0)
    with pytest.raises(ValueError, match="got 0"):
        site_profiles("tiny", 0, 0)


def test_refuses_to_write_into_a_non_empty_site_folder(tmp_path):
    (tmp_path / "hospital-a").mkdir()
    (tmp_path / "hospital-a" / "keep.txt").write_text("hospital data")
    with pytest.raises(FileExistsError, match="hospital-a"):
        write_federation(tmp_path, n_sites=2, seed=0, preset="tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hospital-a"]  # nothing written, nothing touched
    assert (tmp_path / "hospital-a" / "keep.txt").read_text() == "hospital data"


runner = CliRunner()


def test_cli_writes_the_sites_and_prints_their_folders(tmp_path):
    result = runner.invoke(app, ["synth", "--out", str(tmp_path), "--sites", "1", "--preset", "tiny"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(tmp_path / "hospital-a")]
    assert len(discover_cases(tmp_path / "hospital-a")) == 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--preset", "huge"],
            "error: unknown preset 'huge'; valid presets: tiny, demo, bench, anatomy, consortium",
        ),
        (["--sites", "0"], "error: number of sites must be between 1 and 26, got 0"),
        (["--seed", "-1"], "error: --seed must be >= 0, got -1"),
    ],
)
def test_cli_bad_input_gives_one_clear_line_and_bad_input(tmp_path, args, message):
    result = runner.invoke(app, ["synth", "--out", str(tmp_path), *args])
    assert result.exit_code == ExitCode.BAD_INPUT
    assert result.stderr.strip().splitlines() == [message]
    assert result.stdout == "" and not any(tmp_path.iterdir())


def test_cli_existing_output_gives_one_line(tmp_path):
    (tmp_path / "hospital-a").mkdir()
    (tmp_path / "hospital-a" / "x").write_text("")
    result = runner.invoke(app, ["synth", "--out", str(tmp_path)])
    assert result.exit_code == ExitCode.BAD_INPUT
    assert len(result.stderr.strip().splitlines()) == 1 and "already exists" in result.stderr
