"""Quorum, deadlines and resume are coordinator run settings of the one registry (models.shared.run_config), read through
server_app.coordinator_settings.ServerRunSettings, and checked together there with errors that name the setting."""

import re

import pytest

from models.shared.run_config import RESUMABLE_CHANGES, SETTINGS_BY_KEY, Owner, defaults, majority
from server_app.coordinator_settings import ServerRunSettings

KEYS = (
    "min-sites",
    "wait-for-sites-s",
    "describe-timeout-s",
    "train-timeout-s",
    "evaluate-timeout-s",
    "expected-sites",
    "resume",
    "init-model",
)
CONFIG = {**defaults(), "run-dir": "/tmp/run"}


def test_they_are_the_coordinators_settings_and_round_timeout_is_gone():
    assert {SETTINGS_BY_KEY[key].owner for key in KEYS} == {Owner.COORDINATOR}
    assert "round-timeout-s" not in SETTINGS_BY_KEY
    # when rounds run and where they are tracked, not what they compute
    assert {s.key for s in RESUMABLE_CHANGES} == {*KEYS[:5], "tracking-uri", "round-messages"}


def test_the_default_quorum_is_a_majority():
    assert [majority(n) for n in (1, 2, 3, 4, 5, 7)] == [1, 2, 2, 3, 3, 4]


def test_defaults_read_back():
    settings = ServerRunSettings.from_run_config(CONFIG)
    assert (settings.min_sites, settings.wait_for_sites_s, settings.describe_timeout_s) == (2, 1800.0, 300.0)
    assert (settings.train_timeout_s, settings.evaluate_timeout_s) == (3600.0, 1800.0)
    assert settings.expected_sites == () and settings.init_model is None and settings.resume is False
    with_sites = ServerRunSettings.from_run_config({**CONFIG, "expected-sites": " a, b,c "})
    assert with_sites.expected_sites == ("a", "b", "c")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"min-sites": 0}, "`min-sites` is 0, expected at least 1"),
        (
            {"min-sites": 4, "expected-sites": "a,b,c"},
            "`min-sites` is 4 but the federation has only 3 sites (a, b, c); lower min-sites",
        ),
        ({"train-timeout-s": 0}, "`train-timeout-s` is 0.0, expected at least 0.1"),
        ({"evaluate-timeout-s": float("inf")}, "`evaluate-timeout-s` is inf, expected a finite number"),
        ({"wait-for-sites-s": "soon"}, "`wait-for-sites-s` is 'soon', expected a number"),
        ({"resume": "yes"}, "`resume` is 'yes', expected true or false"),
        ({"resume": True, "init-model": "/m.pt"}, "sets both `resume` and `init-model`"),
        ({"expected-sites": "a,b,a"}, "`expected-sites` names a site twice"),
    ],
)
def test_bad_settings_are_refused_naming_them(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ServerRunSettings.from_run_config({**CONFIG, **override})
