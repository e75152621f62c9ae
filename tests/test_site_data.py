"""A site's cases: one bad case is skipped with its reason in the site log, the others are used."""

import os
import shutil

from data_prep.synth.federation import write_federation
from data_prep.transforms import PipelineSettings
from site_app.site_config import SitePaths
from site_app.site_data import load_site_cases
from site_app.site_log import site_logger

SETTINGS = PipelineSettings(spacing_mm=2.0, patch_size=32, samples_per_case=2)


def test_a_corrupt_case_is_skipped_and_the_rest_used(tmp_path):
    write_federation(tmp_path / "fed", n_sites=1, seed=5, preset="tiny")
    data = tmp_path / "fed" / "hospital-a"
    images = sorted((data / "imagesTr").iterdir())
    broken = images[0]
    broken.write_bytes(broken.read_bytes()[:200])  # truncated export
    site = SitePaths("hospital-a", data, tmp_path / "work")

    cases = load_site_cases(site, SETTINGS, 0.2, 0, site_logger(site.work))

    assert cases.n_skipped == 1
    assert len(cases.train) + len(cases.val) == len(images) - 1
    log = (site.work / "logs" / "site.log").read_text()
    assert broken.name.removesuffix(".nii.gz") in log and "skipped" in log


def test_the_cache_is_reused_and_follows_file_changes(tmp_path):
    write_federation(tmp_path / "fed", n_sites=1, seed=6, preset="tiny")
    data = tmp_path / "copy"
    shutil.copytree(tmp_path / "fed" / "hospital-a", data)
    site = SitePaths("hospital-a", data, tmp_path / "work")
    log = site_logger(site.work)
    load_site_cases(site, SETTINGS, 0.2, 0, log)
    cached = set((site.work / "cache").iterdir())
    load_site_cases(site, SETTINGS, 0.2, 0, log)
    assert set((site.work / "cache").iterdir()) == cached  # nothing recomputed

    first = min((data / "labelsTr").iterdir())
    first.write_bytes(first.read_bytes())  # same bytes, new modification time
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    load_site_cases(site, SETTINGS, 0.2, 0, log)
    assert len(set((site.work / "cache").iterdir()) - cached) == 1
