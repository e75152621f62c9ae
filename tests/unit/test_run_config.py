"""The run settings have one registry (models.shared.run_config): pyproject.toml's table matches it, each side reads
exactly the settings it owns through its typed object, and a bad value is refused naming the setting."""

import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from models.presets import MODEL_PRESETS
from models.shared.run_config import (
    PATCH_SIZE,
    RUN_SETTINGS,
    SETTINGS_BY_KEY,
    Owner,
    RunConfigError,
    RunSetting,
    defaults,
    owned_by,
)
from server_app.coordinator_settings import ServerRunSettings
from site_app.settings.run_settings import SiteRunSettings

REPO = Path(__file__).resolve().parents[2]


def pyproject_table() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["flwr"]["app"][
        "config"
    ]


def test_pyproject_and_the_registry_hold_the_same_settings_and_defaults():
    table = pyproject_table()
    assert list(table) == [s.key for s in RUN_SETTINGS]  # same keys, same order (grouped by owner)
    for setting in RUN_SETTINGS:
        value = table[setting.key]
        assert type(value) is setting.type, (
            f"{setting.key}: pyproject has {value!r}, registry a {setting.type}"
        )
        assert value == setting.default, f"{setting.key}: pyproject {value!r} != registry {setting.default!r}"


def test_pyproject_groups_the_table_by_owner_with_a_comment_naming_it():
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    table = text[text.index("[tool.flwr.app.config]") :]
    table = table[: table.index("\n[", 1)]
    owner = None
    for line in table.splitlines():
        if match := re.match(r"# (coordinator|site|shared|simulation)\b", line):
            owner = Owner(match.group(1))
        elif match := re.match(r"([a-z0-9-]+) =", line):
            assert SETTINGS_BY_KEY[match.group(1)].owner == owner, f"{match.group(1)} is under # {owner}"


class Recording(Mapping):
    """A run config that notes which keys are read."""

    def __init__(self, values: dict) -> None:
        self.values, self.read = values, set()

    def __getitem__(self, key: str) -> object:
        self.read.add(key)
        return self.values[key]

    def get(self, key: str, default: object = None) -> object:
        self.read.add(key)
        return self.values.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def test_each_side_reads_exactly_the_settings_it_owns():
    site, server = Recording(defaults()), Recording({**defaults(), "run-dir": "/tmp/run"})
    SiteRunSettings.from_run_config(site)
    ServerRunSettings.from_run_config(server)
    assert site.read == {s.key for s in owned_by(Owner.SITE, Owner.SHARED, Owner.SIMULATION)}
    assert server.read == {s.key for s in owned_by(Owner.COORDINATOR, Owner.SHARED)}


def test_site_code_reads_the_run_config_only_through_its_settings():
    raw_read = re.compile(r"run_config\s*(\[|\.get\()")
    offenders = [
        path.name
        for path in sorted((REPO / "site_app").glob("*.py"))
        if path.name != "run_settings.py" and raw_read.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


@pytest.mark.parametrize("preset", list(MODEL_PRESETS))
def test_patch_size_zero_is_the_presets_and_a_positive_one_overrides(preset):
    config = {**defaults(), "model-preset": preset}
    assert PATCH_SIZE.default == 0
    assert SiteRunSettings.from_run_config(config).pipeline.patch_size == MODEL_PRESETS[preset].patch_size
    assert SiteRunSettings.from_run_config({**config, "patch-size": 48}).pipeline.patch_size == 48


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("local-epochs", "2", "`local-epochs` is '2', expected a whole number"),
        ("local-epochs", 0, "`local-epochs` is 0, expected at least 1"),
        ("patch-size", -8, "`patch-size` is -8, expected at least 0"),
        (
            "patch-size",
            18,
            "`patch-size` is 18, but model preset `small` halves the patch 3 times, so the edge must be a multiple of 8: use 16 or 24",
        ),
        ("seed", True, "`seed` is True, expected a whole number"),
        ("spacing-mm", "2mm", "`spacing-mm` is '2mm', expected a number"),
        ("eval-regions", "organs", "unknown eval-regions 'organs'; choose one of: brats, per-class"),
        ("model-preset", "huge", "unknown model preset 'huge'"),
        ("local-baseline", 1, "`local-baseline` is 1, expected true or false"),
        ("personalize-lr-share", 2.0, "`personalize-lr-share` is 2.0, expected a share in (0, 1]"),
        ("personalize-lr-share", 0.0, "`personalize-lr-share` is 0.0, expected a share in (0, 1]"),
        ("sim-min-lesion-mm3", -1.0, "`sim-min-lesion-mm3` is -1.0, expected at least 0"),
        ("transport-dtype", "bfloat16", "`transport-dtype` is 'bfloat16', expected one of float32, float16"),
    ],
)
def test_a_bad_site_setting_is_refused_naming_it(key, value, message):
    with pytest.raises((RunConfigError, ValueError), match=re.escape(message)):
        SiteRunSettings.from_run_config({**defaults(), key: value})


def test_a_whole_number_is_accepted_where_a_number_is_expected():
    assert SiteRunSettings.from_run_config({**defaults(), "learning-rate": 1}).learning_rate == 1.0


def test_the_coordinator_refuses_an_empty_run_folder_and_a_bad_timeout():
    with pytest.raises(ValueError, match="run-dir"):
        ServerRunSettings.from_run_config(defaults())
    with pytest.raises(RunConfigError, match="train-timeout-s"):
        ServerRunSettings.from_run_config({**defaults(), "run-dir": "/tmp/r", "train-timeout-s": 0})


def test_what_the_site_records_of_a_validation_reads_back_to_the_same_settings():
    settings = SiteRunSettings.from_run_config({**defaults(), "model-preset": "tiny", "sim-data": "/d"})
    assert SiteRunSettings.from_run_config(settings.as_run_config()) == settings


def test_a_boolean_setting_takes_only_true_or_false_and_a_choice_only_its_values():
    flag = RunSetting("a-flag", Owner.COORDINATOR, bool, False, "a test flag")
    assert flag.read({"a-flag": True}) is True
    for wrong in (1, "true", 0.0):
        with pytest.raises(RunConfigError, match=re.escape(f"`a-flag` is {wrong!r}, expected true or false")):
            flag.read({"a-flag": wrong})
    with pytest.raises(RunConfigError, match="expected a whole number"):
        SETTINGS_BY_KEY["seed"].read({"seed": False})
    mode = RunSetting("a-mode", Owner.COORDINATOR, str, "fast", "a test mode", choices=("fast", "slow"))
    assert mode.read({}) == "fast"
    with pytest.raises(RunConfigError, match="`a-mode` is 'medium', expected one of fast, slow"):
        mode.read({"a-mode": "medium"})
    with pytest.raises(RunConfigError, match="expected a finite number"):
        SETTINGS_BY_KEY["learning-rate"].read({"learning-rate": float("nan")})
