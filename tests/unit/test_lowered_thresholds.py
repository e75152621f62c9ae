"""A site that lowers a disclosure threshold below its default says so in site.toml (`i-understand = true`),
and `site check` and the site log name each lowered threshold; without the flag site.toml is refused."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from deploy.site.preflight import check_disclosure_thresholds
from site_app.settings.run_settings import SiteRunSettings
from site_app.settings.site_file import SiteSettingsError, read_site_file
from site_app.site_log import site_logger
from site_app.site_message import note_lowered_thresholds


def site_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("setting", ["min-report-cases = 1", "min-position-cases = 3", "min-train-cases = 2"])
def test_a_threshold_below_its_default_without_the_flag_is_refused_naming_both(tmp_path, setting):
    with pytest.raises(SiteSettingsError) as refused:
        read_site_file(site_toml(tmp_path, f"{setting}\n"))
    key = setting.split(" = ")[0]
    assert f"{key} = {setting.split(' = ')[1]} (default" in str(refused.value)
    assert "`i-understand = true`" in str(refused.value)
    read_site_file(site_toml(tmp_path, f"{setting}\ni-understand = true\n"))  # confirmed: read


def test_defaults_or_higher_thresholds_need_no_flag_and_the_flag_is_a_boolean(tmp_path):
    read_site_file(site_toml(tmp_path, "min-report-cases = 8\nmin-position-cases = 10\n"))
    with pytest.raises(SiteSettingsError, match="`i-understand` is 'yes', expected true or false"):
        read_site_file(site_toml(tmp_path, 'i-understand = "yes"\n'))
    with pytest.raises(SiteSettingsError, match="i-understand = true"):
        read_site_file(site_toml(tmp_path, "min-report-cases = 2\ni-understand = false\n"))


def test_the_site_log_and_site_check_name_every_lowered_threshold(tmp_path):
    node = {"data-path": "/data", "work-path": str(tmp_path), "min-report-cases": 2, "min-train-cases": 3}
    note_lowered_thresholds(node, SiteRunSettings.from_run_config({}), site_logger(tmp_path))
    log = (tmp_path / "logs" / "site.log").read_text()
    assert "min-report-cases = 2 (default 5)" in log and "min-train-cases = 3 (default 5)" in log
    assert "min-position-cases" not in log
    kit = SimpleNamespace(settings=SimpleNamespace(node_config=lambda: node))
    result = check_disclosure_thresholds(kit)
    assert result.status == "warning" and "min-report-cases = 2 (default 5)" in result.message
    default = check_disclosure_thresholds(SimpleNamespace(settings=SimpleNamespace(node_config=dict)))
    assert default.status == "ok" and "min-report-cases 5" in default.message


def test_a_simulated_site_logs_no_lowered_threshold(tmp_path):
    """The simulation's own sim-min-report-cases default (1) is the operator's, not a deployed site's choice."""
    note_lowered_thresholds({"partition-id": 0}, SiteRunSettings.from_run_config({}), site_logger(tmp_path))
    assert "below its default" not in (tmp_path / "logs" / "site.log").read_text()
