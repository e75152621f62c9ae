"""A site's cases at training time: the inventory decides, later failures are skipped with their reason, the
cache follows file contents and survives corrupt entries, and only an aggregate describes the data."""

import json
import shutil

import numpy as np

from data_prep.inventory import read_inventory
from data_prep.synth.federation import write_federation
from data_prep.synth.writers import write_nifti
from data_prep.transforms import PipelineSettings
from site_app.learning.site_data import load_site_cases, site_overview
from site_app.settings.identity import SitePaths
from site_app.site_log import site_logger

SETTINGS = PipelineSettings(spacing_mm=2.0, patch_size=32, samples_per_case=2)


def nifti_site(tmp_path, seed: int) -> SitePaths:
    write_federation(tmp_path / "fed", n_sites=1, seed=seed, preset="tiny")
    data = tmp_path / "data"
    shutil.copytree(tmp_path / "fed" / "hospital-a", data)
    return SitePaths("hospital-a", data, tmp_path / "work")


def test_excluded_cases_are_not_used_and_a_case_failing_later_is_skipped(tmp_path):
    site = nifti_site(tmp_path, seed=5)
    images = sorted((site.data / "imagesTr").iterdir())
    images[0].write_bytes(images[0].read_bytes()[:200])  # truncated export
    log = site_logger(site.work)

    cases = load_site_cases(site, SETTINGS, 0.2, log)  # no inventory yet: the site builds one
    inventory = read_inventory(site.work)
    assert [c.case_id for c in inventory.cases if c.status == "excluded"] == ["hospital-a-001"]
    assert cases.n_skipped == 0 and len(cases.train) + len(cases.val) == len(images) - 1

    # a training case's file vanishes after the check (the split is the site's own, random per site secret)
    vanished = str(cases.train[0]["case_id"])
    (site.data / "imagesTr" / f"{vanished}.nii.gz").unlink()
    cases = load_site_cases(site, SETTINGS, 0.2, log)
    assert cases.n_skipped == 1 and len(cases.train) + len(cases.val) == len(images) - 2
    text = (site.work / "logs" / "site.log").read_text()
    assert "case hospital-a-001 excluded: imagesTr/hospital-a-001.nii.gz: cannot read" in text
    assert f"case {vanished} skipped: cannot read" in text and "No such file or directory" in text


def test_the_cache_follows_file_contents_not_times(tmp_path):
    site = nifti_site(tmp_path, seed=6)
    log = site_logger(site.work)
    load_site_cases(site, SETTINGS, 0.2, log)
    cached = {entry: entry.stat().st_mtime_ns for entry in (site.work / "cache").iterdir()}
    label = min((site.data / "labelsTr").iterdir())
    label.write_bytes(label.read_bytes())  # same bytes, new modification time
    load_site_cases(site, SETTINGS, 0.2, log)
    assert {
        entry: entry.stat().st_mtime_ns for entry in (site.work / "cache").iterdir()
    } == cached  # all reused
    assert "cannot be loaded" not in (site.work / "logs" / "site.log").read_text()

    image = min((site.data / "imagesTr").iterdir())
    write_nifti(
        image, np.asarray(np.random.default_rng(0).normal(size=(30, 30, 30)), np.float32), np.eye(4) * 3
    )
    write_nifti(label, np.pad(np.ones((4, 4, 4), np.uint8), 13), np.eye(4) * 3)  # same grid, new contents
    load_site_cases(site, SETTINGS, 0.2, log)
    assert len(set((site.work / "cache").iterdir()) - set(cached)) == 1


def test_a_corrupt_cache_entry_is_rebuilt(tmp_path):
    site = nifti_site(tmp_path, seed=7)
    log = site_logger(site.work)
    load_site_cases(site, SETTINGS, 0.2, log)
    entries = sorted((site.work / "cache").iterdir())
    sizes = {e: e.stat().st_size for e in entries}
    entries[0].write_bytes(entries[0].read_bytes()[:100])  # a half-written file
    entries[1].write_bytes(b"garbage")
    cases = load_site_cases(site, SETTINGS, 0.2, log)
    assert cases.n_skipped == 0
    assert {e: e.stat().st_size for e in sorted((site.work / "cache").iterdir())} == sizes
    assert (site.work / "logs" / "site.log").read_text().count("cannot be loaded") == 2


def test_site_overview_is_an_aggregate_without_identifiers(tmp_path):
    """Counts only, each 0 or at least k (policy R8); no spacing or size range: a range is two cases' values (R2)."""
    site = nifti_site(tmp_path, seed=8)
    (site.data / "imagesTr" / "hospital-a-003.nii.gz").write_bytes(b"")
    overview = site_overview(site, 5, site_logger(site.work))
    assert overview == {"n-cases-usable": 5}  # 1 excluded case: between 1 and k - 1, withheld
    assert site_overview(site, 1, site_logger(site.work)) == {"n-cases-usable": 5, "n-cases-excluded": 1}
    assert site_overview(site, 6, site_logger(site.work)) == {}
    assert all(isinstance(v, int) for v in overview.values())
    assert "hospital" not in json.dumps(overview)


def test_the_inventory_follows_site_toml(tmp_path):
    """Deployment: the ClientApp reads site.toml (node config `site-config`); an inventory built with other
    [series]/[labels]/[limits] (site check skipped, or site.toml edited after it) is rebuilt with site.toml's."""
    from flwr.app import Context, RecordDict

    from models.shared.node_config import NodeConfig
    from site_app.learning.site_data import site_inventory
    from site_app.settings.identity import resolve_site

    plain = nifti_site(tmp_path, seed=7)
    site_toml = tmp_path / "site.toml"
    site_toml.write_text('site-name = "hospital-a"\nprivate-key = "/k"\n\n[limits]\nmax-voxels = 1000\n')
    context = Context(
        run_id=1,
        node_id=1,
        node_config={
            "site-name": "hospital-a",
            "data-path": str(plain.data),
            "work-path": str(plain.work),
            NodeConfig.SITE_CONFIG: str(site_toml),
        },
        state=RecordDict(),
        run_config={},
    )
    site = resolve_site(context)
    assert site.settings_file == site_toml
    log = site_logger(site.work)

    inventory = site_inventory(
        SitePaths(site.name, site.data, site.work), log
    )  # as without site.toml: defaults
    assert inventory.usable and inventory.settings.max_voxels != 1000

    inventory = site_inventory(site, log)  # site.toml's limit: every tiny volume is above 1000 voxels
    assert inventory.settings.max_voxels == 1000 and not inventory.usable
    assert read_inventory(site.work).settings.max_voxels == 1000
    assert "differ from the inventory's" in (site.work / "logs" / "site.log").read_text()

    site_toml.write_text('site-name = "hospital-a"\n')  # the limit removed again
    assert site_inventory(site, log).usable
    builds = (site.work / "logs" / "site.log").read_text().count("building the site inventory")
    site_inventory(site, log)  # unchanged settings: reused, not rebuilt
    assert (site.work / "logs" / "site.log").read_text().count("building the site inventory") == builds == 3
