"""bench/quality.py's command line: `--data-seed` draws other cases (without it, the cases every entry used);
`--test-cases` sets how many held-out cases per site every model is measured on again."""

import sys

import pytest


@pytest.fixture
def quality(bench_module):
    return bench_module("quality")


def parsed(quality, monkeypatch, *argv: str):
    monkeypatch.setattr(sys, "argv", ["quality.py", *argv])
    return quality.quality_options().parse_args()


def test_without_data_seed_the_bench_writes_the_cases_of_every_recorded_entry(quality, monkeypatch):
    assert parsed(quality, monkeypatch).data_seed == quality.DATA_SEED == 0


def test_data_seed_is_the_synthetic_federations_seed(quality, monkeypatch):
    assert parsed(quality, monkeypatch, "--preset", "consortium", "--data-seed", "7").data_seed == 7


def test_a_data_seed_that_is_not_a_number_is_refused(quality, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        parsed(quality, monkeypatch, "--data-seed", "seven")
    assert "--data-seed" in capsys.readouterr().err


def test_the_plateau_bench_measures_on_held_out_cases_unless_told_none(quality, monkeypatch):
    assert parsed(quality, monkeypatch).test_cases == quality.HELD_OUT_CASES > 0
    assert parsed(quality, monkeypatch, "--test-cases", "0").test_cases == 0


def test_a_negative_count_of_held_out_cases_is_refused(quality, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        parsed(quality, monkeypatch, "--test-cases", "-1")
    assert "--test-cases" in capsys.readouterr().err
