"""The site-owned pieces of the disclosure policy: its secret, its validation split, which sets may be released,
and its thresholds and limits, which come from the site (node config / site.toml), never the coordinator."""

import logging
import os
import stat

import pytest

from deploy.kits.contents import KitError, read_kit_settings
from models.shared.run_config import defaults
from models.shared.wire import POLICY_CONVENTIONS
from site_app.disclosure.policy import DisclosurePolicy, policy_conventions
from site_app.disclosure.validation_split import SPLIT_FILE, record_released, released_set, site_split
from site_app.settings.limits import SiteLimits
from site_app.settings.run_settings import SiteRunSettings
from site_app.settings.secret import SECRET_FILE, site_secret

LOG = logging.getLogger("test")
DEPLOYED = {"data-path": "/data", "work-path": "/work"}
CASES = [f"case-{i:02d}" for i in range(20)]


def test_the_secret_is_made_once_readable_by_the_site_only(tmp_path):
    secret = site_secret(tmp_path)
    path = tmp_path / SECRET_FILE
    assert len(secret) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert site_secret(tmp_path) == secret  # never replaced
    os.chmod(path, 0o644)  # e.g. restored from a backup with other permissions
    assert site_secret(tmp_path) == secret and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_a_damaged_secret_is_a_clear_error(tmp_path):
    (tmp_path / SECRET_FILE).parent.mkdir()
    (tmp_path / SECRET_FILE).write_text("abcd\n")
    with pytest.raises(ValueError, match="not a site secret"):
        site_secret(tmp_path)


def test_the_split_is_made_once_and_new_cases_never_move_the_old_ones(tmp_path):
    first = site_split(tmp_path, CASES[:10], 0.2, LOG)
    assert len(first.validation) == 2 and len(first.training) == 8
    assert site_split(tmp_path, CASES[:10], 0.9, LOG) == first  # a stored split is not redone
    grown = site_split(tmp_path, CASES, 0.2, LOG)
    assert set(first.validation) <= set(grown.validation) and set(first.training) <= set(grown.training)
    assert site_split(tmp_path, CASES[1:], None, LOG).validation == tuple(
        c for c in grown.validation if c != CASES[0]
    )


def test_another_site_secret_gives_another_split(tmp_path):
    splits = {site_split(tmp_path / str(i), CASES, 0.25, LOG).validation for i in range(4)}
    assert len(splits) > 1  # chosen by the site's own secret, which the coordinator does not know
    assert (tmp_path / "0" / SPLIT_FILE).is_file()


@pytest.mark.parametrize(
    ("last", "now", "expected"),
    [
        (None, CASES[:6], CASES[:6]),  # first release
        (CASES[:6], CASES[:6], CASES[:6]),  # same set
        (CASES[:6], CASES[:9], CASES[:6]),  # 3 added (< k): the last set, the new ones wait
        (CASES[:6], CASES[:11], CASES[:11]),  # 5 added (= k): the new set
        (CASES[:6], CASES[1:6], None),  # 1 lost (< k): nothing, else the lost case is a difference away
        (CASES[:6], CASES[1:8], None),  # 1 lost, 2 added: 3 changes, the last set incomplete
        (CASES[:10], CASES[5:10], CASES[5:10]),  # 5 lost: a difference of k cases
    ],
)
def test_a_set_is_released_only_if_it_is_the_last_one_or_k_cases_away(tmp_path, last, now, expected):
    if last is not None:
        record_released(tmp_path, "validation", last)
    result = released_set(tmp_path, "validation", now, k=5)
    assert (None if result.cases is None else sorted(result.cases)) == expected, result.reason


def run_settings(**run_config: object) -> SiteRunSettings:
    return SiteRunSettings.from_run_config({**defaults(), **run_config})


def test_thresholds_come_from_the_node_config_never_the_run_config():
    lowering = {
        "min-report-cases": 1,
        "min-train-cases": 1,
        "min-position-cases": 1,
        "validation-fraction": 0.99,
    }
    sim_lowering = {f"sim-{key}": value for key, value in lowering.items()}
    settings = SiteRunSettings.from_run_config({**defaults(), **lowering, **sim_lowering})
    policy = DisclosurePolicy.for_site(DEPLOYED, settings)
    assert (policy.min_report_cases, policy.min_position_cases, policy.min_train_cases) == (5, 10, 5)
    assert policy.validation_fraction == 0.2
    assert (
        DisclosurePolicy.for_site({**DEPLOYED, **lowering}, settings).min_train_cases == 1
    )  # the site's choice


def test_a_simulation_takes_them_from_the_sim_run_settings():
    simulated = {"partition-id": 0, "num-partitions": 2}
    settings = SiteRunSettings.from_run_config({**defaults(), "sim-min-train-cases": 2, "min-train-cases": 9})
    policy = DisclosurePolicy.for_site(simulated, settings)
    assert (policy.min_report_cases, policy.min_train_cases) == (1, 2)
    wrong = SiteRunSettings.from_run_config({**defaults(), "sim-validation-fraction": 1.5})
    with pytest.raises(
        ValueError, match="run setting `sim-validation-fraction` must be a fraction between 0 and 1"
    ):
        DisclosurePolicy.for_site(simulated, wrong)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("min-train-cases", 0, "`min-train-cases` must be a whole number of at least 1, got 0"),
        ("min-position-cases", 2.5, "`min-position-cases` must be a whole number of at least 1, got 2.5"),
        ("validation-fraction", 1.5, "`validation-fraction` must be a fraction between 0 and 1"),
        ("limits.spacing-mm-min", -1.0, "`limits.spacing-mm-min` must be a positive number"),
        ("limits.patch-size-max", 96.5, "`limits.patch-size-max` must be a whole number"),
    ],
)
def test_a_wrong_site_setting_names_the_key(key, value, message):
    with pytest.raises(ValueError, match="node config " + message.replace("(", r"\(").replace(".", r"\.")):
        DisclosurePolicy.from_node_config({**DEPLOYED, key: value})
        SiteLimits.from_node_config({key: value})


def site_toml(tmp_path, extra: str) -> object:
    path = tmp_path / "site.toml"
    path.write_text(
        'site-name = "hospital-a"\ncoordinator = "fl.example.org:8000"\ndata-path = "/data/a"\n'
        'work-path = "/work/a"\nprivate-key = "/keys/site.key"\nmin-report-cases = 5\nruntime-port = 9094\n'
        + extra
    )
    return path


def test_a_kits_site_toml_passes_the_sites_settings_to_its_node_config(tmp_path):
    path = site_toml(
        tmp_path,
        "min-train-cases = 8\nvalidation-fraction = 0.25\n\n[limits]\nspacing-mm-min = 1.0\nmax-voxels = 9\n",
    )
    settings = read_kit_settings(path, "hospital-a")
    assert settings.policy == {"min-train-cases": 8, "validation-fraction": 0.25}
    assert settings.limits == {"spacing-mm-min": 1.0}
    assert settings.ingest.max_voxels == 9
    node_config = settings.node_config()
    assert {
        k: node_config[k] for k in ("min-train-cases", "validation-fraction", "limits.spacing-mm-min")
    } == {
        "min-train-cases": 8,
        "validation-fraction": 0.25,
        "limits.spacing-mm-min": 1.0,
    }
    policy = DisclosurePolicy.for_site(node_config, run_settings())  # what the ClientApp reads from it
    assert (policy.min_train_cases, policy.validation_fraction) == (8, 0.25)
    assert SiteLimits.from_node_config(node_config).spacing_mm_min == 1.0


def test_a_kits_wrong_setting_is_refused_when_the_site_starts(tmp_path):
    with pytest.raises(KitError, match=r"site.toml: `limits.batch-size-max` must be a positive number"):
        read_kit_settings(site_toml(tmp_path, "[limits]\nbatch-size-max = 0\n"), "hospital-a")
    with pytest.raises(KitError, match=r"site.toml: `min-train-cases` must be a whole number of at least 1"):
        read_kit_settings(site_toml(tmp_path, "min-train-cases = 0\n"), "hospital-a")
    with pytest.raises(KitError, match=r"site.toml: `validation-fraction` is 'a fifth', expected a number"):
        read_kit_settings(site_toml(tmp_path, 'validation-fraction = "a fifth"\n'), "hospital-a")


def test_the_policy_conventions_are_the_ones_the_report_sets_aside():
    """Sites with other thresholds are not flagged as having other metric conventions (server_app.report.content)."""
    policy = DisclosurePolicy.from_node_config(DEPLOYED)
    assert set(policy_conventions(policy)) == set(POLICY_CONVENTIONS)
