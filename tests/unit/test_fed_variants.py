"""bench/fed_variants.py reads a variant into typed run settings and refuses one the app would ignore or reject."""

import pytest


@pytest.fixture
def parse_variant(bench_module):
    return bench_module("fed_variants").parse_variant


def test_a_variant_becomes_typed_run_settings(parse_variant):
    arm = parse_variant("slow=lr-schedule:constant,local-norm:false,learning-rate:0.001,local-epochs:1")
    assert arm.name == "slow"
    assert arm.overrides == {
        "lr-schedule": "constant",
        "local-norm": False,
        "learning-rate": 0.001,
        "local-epochs": 1,
    }


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("typo=lr-shedule:constant", "'lr-shedule' is not a run setting"),  # would silently run the base
        ("bad=local-norm:maybe", "`local-norm` is 'maybe'"),
        ("neg=learning-rate:-1", "`learning-rate` is -1.0"),
        ("nokey=constant", "is not KEY:VALUE"),
        ("=local-norm:true", "write NAME=KEY:VALUE"),
    ],
)
def test_a_variant_the_app_would_ignore_or_refuse_is_an_error_naming_it(parse_variant, text, named):
    with pytest.raises(SystemExit, match="error: --variant") as raised:
        parse_variant(text)
    assert named in str(raised.value)
