"""Held-out test cases: more cases of each site's own profile, none of them one of the site's cases."""

import numpy as np
import pytest

from data_prep.discovery import discover_cases
from data_prep.loading import load_case
from data_prep.synth.federation import make_case, write_held_out
from data_prep.synth.profiles import default_sites, site_profiles

PRESET = "consortium"
N_SITES = default_sites(PRESET)
PROFILES = site_profiles(PRESET, N_SITES, seed=0)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("held-out")
    return out, write_held_out(out, N_SITES, seed=0, preset=PRESET, n_cases=1)


def test_each_site_gets_the_cases_after_its_own(held_out):
    _, folders = held_out
    assert [f.name for f in folders] == [p.name for p in PROFILES]
    for profile, folder in zip(PROFILES, folders, strict=True):
        cases = discover_cases(folder)
        assert [c.case_id for c in cases] == [f"{profile.name}-{profile.n_cases + 1:03d}"]


def test_a_held_out_case_is_the_site_profiles_next_draw_and_none_of_its_own(held_out):
    _, folders = held_out
    profile, folder = PROFILES[2], folders[2]
    [case] = discover_cases(folder)
    label = load_case(case)[1].array
    assert np.array_equal(label, make_case(profile, profile.n_cases, 0).label.array)
    own = [make_case(profile, i, 0).label.array for i in range(profile.n_cases)]
    assert not any(a.shape == label.shape and np.array_equal(a, label) for a in own)


def test_no_held_out_cases_or_a_written_folder_is_refused(tmp_path, held_out):
    with pytest.raises(ValueError, match="at least 1"):
        write_held_out(tmp_path / "none", N_SITES, seed=0, preset=PRESET, n_cases=0)
    out, _ = held_out
    with pytest.raises(FileExistsError, match="hospital-a"):
        write_held_out(out, N_SITES, seed=0, preset=PRESET, n_cases=1)
