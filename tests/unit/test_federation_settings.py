"""Quorum, deadlines and resume are run settings declared once (models.federation_settings) with the same keys
and defaults as pyproject.toml's [tool.flwr.app.config], read and checked with errors that name the setting."""

import tomllib
from pathlib import Path

import pytest
from flwr.common.config import flatten_dict

from models.federation_settings import FEDERATION_SETTINGS, FederationSettings, majority

REPO = Path(__file__).resolve().parents[2]
APP_CONFIG = flatten_dict(
    tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
)


def test_every_setting_is_in_pyproject_with_its_default():
    for setting in FEDERATION_SETTINGS:
        assert setting.key in APP_CONFIG, setting.key
        assert APP_CONFIG[setting.key] == setting.default and type(APP_CONFIG[setting.key]) is setting.type
        assert setting.owner == "coordinator" and setting.doc


def test_the_default_quorum_is_a_majority():
    assert [majority(n) for n in (1, 2, 3, 4, 5, 7)] == [1, 2, 2, 3, 3, 4]


def test_defaults_read_back():
    settings = FederationSettings.from_run_config(APP_CONFIG)
    assert (settings.min_sites, settings.train_timeout_s, settings.evaluate_timeout_s) == (2, 3600.0, 1800.0)
    assert settings.expected_sites == () and settings.init_model is None and settings.resume is False


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"min-sites": 0}, "`min-sites` is 0; it must be at least 1"),
        (
            {"min-sites": 4, "expected-sites": "a,b,c"},
            "`min-sites` is 4 but the federation has only 3 sites (a, b, c)",
        ),
        ({"train-timeout-s": 0}, "`train-timeout-s` is 0.0; it must be a positive number of seconds"),
        ({"wait-for-sites-s": "soon"}, "`wait-for-sites-s` is 'soon'; expected a number"),
        ({"resume": "yes"}, "`resume` is 'yes'; expected true or false"),
        ({"resume": True, "init-model": "/m.pt"}, "both `resume` and `init-model`"),
        ({"expected-sites": "a,b,a"}, "names a site twice"),
    ],
)
def test_bad_settings_are_named(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FederationSettings.from_run_config({**APP_CONFIG, **override})
