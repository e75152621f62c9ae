"""bench/quality.py's sites validate on the same cases in every run with the same seed, as simulate's do: a
benchmark entry can be rerun, and two entries' figures compared."""

from pathlib import Path

import pytest

from data_prep.synth.federation import write_federation
from site_app.settings.run_settings import SiteRunSettings
from site_app.settings.secret import simulated_site_secret, site_secret


@pytest.fixture
def quality(bench_module):
    return bench_module("common"), bench_module("quality")


def test_two_runs_with_one_seed_split_alike_and_another_seed_differently(tmp_path, quality):
    common, bench = quality
    data = tmp_path / "data"
    write_federation(data, n_sites=2, seed=3, preset="tiny")

    def validation_cases(work: Path, seed: int) -> dict[str, list[str]]:
        settings = SiteRunSettings.from_run_config(common.run_config(seed=seed))
        sites = bench.load_sites(data, work, settings)
        for site in sites:  # the simulation's secret, not a random one
            assert site_secret(site.paths.work) == simulated_site_secret(seed, site.paths.name)
        return {s.paths.name: sorted(str(i["case_id"]) for i in s.cases.val) for s in sites}

    first = validation_cases(tmp_path / "work-1", seed=0)
    assert all(first.values())
    assert validation_cases(tmp_path / "work-2", seed=0) == first
    other = [validation_cases(tmp_path / f"work-seed-{seed}", seed=seed) for seed in (1, 2, 3)]
    assert any(split != first for split in other)  # the split follows the seed: the test can tell
