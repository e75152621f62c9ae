"""bench/quality.py's per-site ratios over local-only: the figures behind fed_over_local_min and its ceiling."""

import pytest


@pytest.fixture
def over_local_only(bench_module):
    return bench_module("quality").over_local_only


def test_each_site_is_the_mean_over_seeds_against_local_only_s(over_local_only):
    per_site = {
        "local-only": {"hospital-a": [0.70, 0.80], "hospital-b": [0.5, 0.5]},
        "centralized": {"hospital-a": [0.77, 0.73], "hospital-b": [0.6, 0.4]},
    }
    ratios = over_local_only(per_site, "centralized")
    assert ratios == pytest.approx({"hospital-a": 0.75 / 0.75, "hospital-b": 0.5 / 0.5})
    per_site["centralized"]["hospital-b"] = [0.55, 0.55]
    assert over_local_only(per_site, "centralized")["hospital-b"] == pytest.approx(1.1)


def test_a_site_that_learns_nothing_alone_is_infinite_not_an_error(over_local_only):
    per_site = {"local-only": {"hospital-f": [0.0]}, "centralized": {"hospital-f": [0.4]}}
    assert over_local_only(per_site, "centralized") == {"hospital-f": float("inf")}
