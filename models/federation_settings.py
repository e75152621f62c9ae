"""Run settings for a federation that outlives its hospitals: quorum, deadlines, resume (issue 11).

Each setting is declared once here with its owner, type, default and meaning; pyproject.toml's
[tool.flwr.app.config] carries the same keys and defaults (a unit test keeps the two equal), so `--run-config`
accepts them. When models/run_config.py (the registry of every run setting) exists, these entries move there.

Deadline defaults are for real hospitals on CPUs: a train phase of a 3D UNet can take tens of minutes, and a
site's server may reboot for a patch window. Tests set them to seconds.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Owner = Literal["coordinator", "site", "shared", "simulation"]


@dataclass(frozen=True)
class RunSetting:
    """One key of [tool.flwr.app.config]: who sets it, its type and default, and what it means."""

    key: str
    owner: Owner
    type: type
    default: bool | int | float | str
    doc: str


MIN_SITES = RunSetting(
    "min-sites",
    "coordinator",
    int,
    2,
    "The quorum: a round starts only with this many sites online, and the global model changes only when "
    "at least this many sound training replies arrived (otherwise it is kept and the reason recorded). "
    "`oncofed run` defaults it to a majority of the kit's sites.",
)
WAIT_FOR_SITES_S = RunSetting(
    "wait-for-sites-s",
    "coordinator",
    float,
    1800.0,
    "Seconds to wait, before each round, for the quorum to be online; then the run stops, naming the "
    "offline sites, and can be continued with `oncofed run --resume`.",
)
DESCRIBE_TIMEOUT_S = RunSetting(
    "describe-timeout-s",
    "coordinator",
    float,
    300.0,
    "Seconds a newly seen site has to say who it is (its first answer may build its data inventory).",
)
TRAIN_TIMEOUT_S = RunSetting(
    "train-timeout-s",
    "coordinator",
    float,
    3600.0,
    "Deadline of a round's training phase: it closes when every selected site replied or this many seconds "
    "passed; a site that did not reply is recorded as `timeout`.",
)
EVALUATE_TIMEOUT_S = RunSetting(
    "evaluate-timeout-s",
    "coordinator",
    float,
    1800.0,
    "Deadline of a round's validation phase (same rule as train-timeout-s).",
)
EXPECTED_SITES = RunSetting(
    "expected-sites",
    "coordinator",
    str,
    "",
    "Comma-separated names of the federation's sites (`oncofed run`: the kit's sites; `simulate`: the site "
    "folders), so a site that never connects is named as offline. Empty: only sites seen are named.",
)
RESUME = RunSetting(
    "resume",
    "coordinator",
    bool,
    False,
    "Continue the run in run-dir from its last round checkpoint (set by `--resume`; never by hand).",
)
INIT_MODEL = RunSetting(
    "init-model",
    "coordinator",
    str,
    "",
    "A global model saved by an earlier run (models/final.pt, best.pt or latest.pt) to start from instead of "
    "a fresh one; it must be of the same model preset (set by `oncofed run --init`).",
)

FEDERATION_SETTINGS: tuple[RunSetting, ...] = (
    MIN_SITES,
    WAIT_FOR_SITES_S,
    DESCRIBE_TIMEOUT_S,
    TRAIN_TIMEOUT_S,
    EVALUATE_TIMEOUT_S,
    EXPECTED_SITES,
    RESUME,
    INIT_MODEL,
)

OPERATIONAL_KEYS = frozenset(
    s.key for s in (MIN_SITES, WAIT_FOR_SITES_S, DESCRIBE_TIMEOUT_S, TRAIN_TIMEOUT_S, EVALUATE_TIMEOUT_S)
)
"""Settings a resumed run may change: they decide when rounds run, not what a round computes."""


def majority(n_sites: int) -> int:
    """The default quorum: more than half of the sites (1 of 1, 2 of 2 or 3, 3 of 4 or 5)."""
    return n_sites // 2 + 1


def _read(run_config: dict, setting: RunSetting) -> bool | int | float | str:
    value = run_config.get(setting.key, setting.default)
    if setting.type is bool:
        if not isinstance(value, bool):
            raise ValueError(f"run config `{setting.key}` is {value!r}; expected true or false")
        return value
    if setting.type in (int, float) and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"run config `{setting.key}` is {value!r}; expected a number")
    return setting.type(value)


@dataclass(frozen=True)
class FederationSettings:
    """The coordinator's typed view of the settings above."""

    min_sites: int
    wait_for_sites_s: float
    describe_timeout_s: float
    train_timeout_s: float
    evaluate_timeout_s: float
    expected_sites: tuple[str, ...]
    resume: bool
    init_model: Path | None

    @classmethod
    def from_run_config(cls, run_config: dict) -> "FederationSettings":
        """Read and check; ValueError names the setting and what is wrong with it."""
        sites = tuple(s.strip() for s in str(_read(run_config, EXPECTED_SITES)).split(",") if s.strip())
        init_model = str(_read(run_config, INIT_MODEL))
        settings = cls(
            min_sites=int(_read(run_config, MIN_SITES)),
            wait_for_sites_s=float(_read(run_config, WAIT_FOR_SITES_S)),
            describe_timeout_s=float(_read(run_config, DESCRIBE_TIMEOUT_S)),
            train_timeout_s=float(_read(run_config, TRAIN_TIMEOUT_S)),
            evaluate_timeout_s=float(_read(run_config, EVALUATE_TIMEOUT_S)),
            expected_sites=sites,
            resume=bool(_read(run_config, RESUME)),
            init_model=Path(init_model).expanduser() if init_model else None,
        )
        settings.check()
        return settings

    def check(self) -> None:
        if self.min_sites < 1:
            raise ValueError(f"run config `min-sites` is {self.min_sites}; it must be at least 1")
        if self.expected_sites and self.min_sites > len(self.expected_sites):
            raise ValueError(
                f"run config `min-sites` is {self.min_sites} but the federation has only "
                f"{len(self.expected_sites)} sites ({', '.join(self.expected_sites)}); lower min-sites"
            )
        if len(set(self.expected_sites)) != len(self.expected_sites):
            raise ValueError(
                f"run config `expected-sites` names a site twice: {', '.join(self.expected_sites)}"
            )
        for key, value in (
            (WAIT_FOR_SITES_S.key, self.wait_for_sites_s),
            (DESCRIBE_TIMEOUT_S.key, self.describe_timeout_s),
            (TRAIN_TIMEOUT_S.key, self.train_timeout_s),
            (EVALUATE_TIMEOUT_S.key, self.evaluate_timeout_s),
        ):
            if not value > 0:
                raise ValueError(f"run config `{key}` is {value}; it must be a positive number of seconds")
        if self.resume and self.init_model is not None:
            raise ValueError(
                "run config sets both `resume` and `init-model`: a run either continues or starts"
            )
