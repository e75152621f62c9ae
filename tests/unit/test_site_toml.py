"""site.toml has one schema and one parser (site_app.settings.site_file): the kit's template holds exactly its
top-level keys, the launcher's node config is what the ClientApp reads, and a kit's tables are checked by the same
parser that `site check` uses."""

import tomllib
from pathlib import Path

import pytest

from deploy.kits.contents import KitError, read_kit_settings
from deploy.kits.operator_files import Release, site_files
from deploy.kits.release_fab import FabInfo
from models.shared.node_config import DEFAULT_MIN_REPORT_CASES, DEPLOYED_NODE_CONFIG, NodeConfig
from models.shared.run_config import defaults
from site_app.disclosure.model_sharing import shares_local_model
from site_app.disclosure.policy import DisclosurePolicy
from site_app.local_dp import LocalDp
from site_app.settings.identity import site_paths
from site_app.settings.run_settings import SiteRunSettings
from site_app.settings.site_file import OPTIONAL_IN_A_KIT, TOP_LEVEL, read_site_settings

SITE = "hospital-a"


def kit_site_toml(tmp_path: Path, **replace: str) -> Path:
    """The site.toml a kit ships, with its placeholders filled in (and any line replaced: key -> new line)."""
    release = Release(wheel=Path("oncofed-0.1.0-py3-none-any.whl"), flwr_version="1.42.0")
    fab = FabInfo("0" * 64, "oncofed", "oncofed", "0.1.0", (), frozenset())
    text = site_files(release, "fed", SITE, "fl.example.org:8443", ["fl.example.org"], "SHA256:x", fab)[
        "site.toml"
    ]
    (tmp_path / "data").mkdir(exist_ok=True)
    filled = {
        "data-path": f'data-path = "{tmp_path / "data"}"',
        "work-path": f'work-path = "{tmp_path / "work"}"',
        "private-key": f'private-key = "{tmp_path / "keys" / "site.key"}"',
    }
    lines = []
    for line in text.splitlines():
        key = line.split(" =", 1)[0]
        lines.append({**filled, **replace}.get(key, line))
    path = tmp_path / "site.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_kit_template_holds_exactly_the_schemas_top_level_keys(tmp_path):
    values = tomllib.loads(kit_site_toml(tmp_path).read_text())
    assert list(values) == list(TOP_LEVEL)
    assert values["min-report-cases"] == DEFAULT_MIN_REPORT_CASES


def test_the_launchers_node_config_is_what_the_clientapp_reads(tmp_path):
    path = kit_site_toml(tmp_path)
    settings = read_kit_settings(path, SITE)
    node_config = settings.node_config()
    assert tuple(node_config) == DEPLOYED_NODE_CONFIG
    run_settings = SiteRunSettings.from_run_config(defaults())
    site = site_paths(node_config, run_settings)
    assert (site.name, site.data, site.work) == (SITE, tmp_path / "data", tmp_path / "work")
    assert site.settings_file == path.resolve()  # the ClientApp reads its [series], [labels], [limits]
    assert settings.private_key == tmp_path / "keys" / "site.key"
    assert "private-key" not in node_config  # the key is the SuperNode's, never the ClientApp's
    assert DisclosurePolicy.for_site(node_config, run_settings) == DisclosurePolicy.from_node_config({})


def test_a_kit_may_leave_out_the_optional_disclosure_settings(tmp_path):
    """They take the site's defaults, in the launcher's node config as in the ClientApp."""
    optional = {key: "" for key in OPTIONAL_IN_A_KIT}
    settings = read_kit_settings(kit_site_toml(tmp_path, **optional), SITE)
    assert not set(settings.node_config()) & OPTIONAL_IN_A_KIT
    assert DisclosurePolicy.from_node_config(settings.node_config()) == DisclosurePolicy.from_node_config({})


def test_a_kits_tables_are_read_by_the_one_parser(tmp_path):
    path = kit_site_toml(tmp_path)
    path.write_text(path.read_text() + "[limits]\nmax-voxels = 1000\n")
    assert read_kit_settings(path, SITE).ingest.max_voxels == 1000 == read_site_settings(path).max_voxels
    path.write_text(path.read_text() + "[series]\nmodality = ['CT']\n")
    with pytest.raises(KitError, match=r"unknown key\(s\) modality in \[series\]"):
        read_kit_settings(path, SITE)


def test_a_kit_needs_every_top_level_key_and_names_a_missing_one(tmp_path):
    path = kit_site_toml(tmp_path, **{"runtime-port": ""})
    with pytest.raises(KitError, match="`runtime-port` is missing"):
        read_kit_settings(path, SITE)
    assert read_site_settings(path).max_voxels > 0  # outside a kit (site check --config) it is optional


def test_a_top_level_key_of_the_wrong_type_is_named(tmp_path):
    path = kit_site_toml(tmp_path, **{"min-report-cases": 'min-report-cases = "5"'})
    with pytest.raises(KitError, match="`min-report-cases` is '5', expected a whole number"):
        read_kit_settings(path, SITE)


def test_an_unknown_top_level_key_is_refused(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text("site-nmae = 'x'\n")
    with pytest.raises(ValueError, match="unknown key or section 'site-nmae'"):
        read_site_settings(path)


def test_a_sites_consent_to_share_its_local_model_is_off_as_shipped_and_reaches_the_clientapp(tmp_path):
    settings = SiteRunSettings.from_run_config(defaults())
    shipped = read_kit_settings(kit_site_toml(tmp_path), SITE).node_config()
    assert shipped[NodeConfig.SHARE_LOCAL_MODEL] is False
    assert not shares_local_model(shipped, settings, SITE)

    key = NodeConfig.SHARE_LOCAL_MODEL
    consenting = kit_site_toml(tmp_path, **{key: f"{key} = true"})
    assert shares_local_model(read_kit_settings(consenting, SITE).node_config(), settings, SITE)

    wrong = kit_site_toml(tmp_path, **{key: f'{key} = "yes"'})
    with pytest.raises(KitError, match=key):
        read_kit_settings(wrong, SITE)


def test_a_sites_local_dp_is_off_as_shipped_and_its_own_setting_reaches_the_clientapp(tmp_path):
    settings = SiteRunSettings.from_run_config(defaults())
    shipped = read_kit_settings(kit_site_toml(tmp_path), SITE).node_config()
    assert not LocalDp.for_site(shipped, settings).on

    key, norm = NodeConfig.LOCAL_DP_NOISE_MULTIPLIER, NodeConfig.LOCAL_DP_CLIPPING_NORM
    noisy = kit_site_toml(tmp_path, **{key: f"{key} = 0.8", norm: f"{norm} = 2"})
    local_dp = LocalDp.for_site(read_kit_settings(noisy, SITE).node_config(), settings)
    assert local_dp.on and local_dp.sigma == pytest.approx(1.6)
    # the coordinator's run config has no say: its simulated-site setting is ignored for a deployed site
    coordinator = SiteRunSettings.from_run_config({**defaults(), "sim-local-dp-noise-multiplier": 5.0})
    assert LocalDp.for_site(read_kit_settings(noisy, SITE).node_config(), coordinator).noise_multiplier == 0.8

    wrong = kit_site_toml(tmp_path, **{key: f'{key} = "high"'})
    with pytest.raises(KitError, match=key):
        read_kit_settings(wrong, SITE)
