"""The run settings of the training strategy (issue 13), each defined once: key, owner, type, default, doc.

Owners: "coordinator" (read by the ServerApp only), "site" (read by the ClientApp only), "shared" (both sides
must agree on it). Every key is also declared in pyproject.toml's `[tool.flwr.app.config]` (a test checks the
defaults agree), so `--run-config 'strategy="fedadam"'` works in `oncofed simulate` and `oncofed run`.
`FederationSettings.from_run_config` is the one typed reader, used by both sides; a bad value is a ValueError
naming the key and what it accepts.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Owner = Literal["coordinator", "site", "shared", "simulation"]

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi")
TRANSPORT_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class Setting:
    key: str
    owner: Owner
    type: type
    default: bool | int | float | str
    doc: str
    choices: tuple[str, ...] = ()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "strategy",
        "coordinator",
        str,
        "fedavg",
        "How the coordinator turns the sites' weights into the next global model: fedavg (mean weighted by "
        "training cases), fedprox (the same mean; sites add a proximal term), fedadam / fedyogi (a server "
        "optimizer on the averaged update).",
        STRATEGIES,
    ),
    Setting(
        "proximal-mu",
        "coordinator",
        float,
        0.01,
        "fedprox: weight μ of the proximal term μ/2·‖w − w_global‖² the sites add to their loss (sent to the "
        "sites in the train config).",
    ),
    Setting("server-lr", "coordinator", float, 0.01, "fedadam/fedyogi: server learning rate η."),
    Setting("beta1", "coordinator", float, 0.9, "fedadam/fedyogi: decay of the first moment (momentum)."),
    Setting("beta2", "coordinator", float, 0.99, "fedadam/fedyogi: decay of the second moment."),
    Setting("tau", "coordinator", float, 0.001, "fedadam/fedyogi: adaptivity τ added to √v."),
    Setting(
        "local-norm",
        "shared",
        bool,
        False,
        "Site-local normalization (FedBN-style): the instance-norm scale and shift of the model stay at each "
        "site; they are neither sent nor averaged, and validation measures each site's personalized model.",
    ),
    Setting(
        "local-baseline",
        "site",
        bool,
        False,
        "Each site also trains a local-only model (same initial weights, same per-round budget), kept in its "
        "work folder, and reports aggregates of it and of the paired difference global − local-only.",
    ),
    Setting(
        "transport-dtype",
        "shared",
        str,
        "float32",
        "Precision of the weights in messages, both ways; training and aggregation stay in float32.",
        TRANSPORT_DTYPES,
    ),
    Setting(
        "dp-noise-multiplier",
        "coordinator",
        float,
        0.0,
        "Central differential privacy (opt-in when > 0): Gaussian noise of σ = multiplier × clipping norm / "
        "number of sites added to the mean of the clipped updates (Flower's server-side fixed clipping).",
    ),
    Setting(
        "dp-clipping-norm",
        "coordinator",
        float,
        1.0,
        "Central DP: L2 norm every site's update (its weights minus the global weights) is clipped to.",
    ),
    Setting(
        "dp-delta",
        "coordinator",
        float,
        1e-5,
        "Central DP: the δ at which ε is reported (Flower's RDP accountant, site-level add-or-remove-one).",
    ),
    Setting(
        "min-lesion-mm3",
        "site",
        float,
        0.0,
        "Post-processing at validation: connected components (26-connectivity) of each predicted label "
        "smaller than this volume in mm³ are removed (MONAI RemoveSmallObjects); 0 keeps every component.",
    ),
)
BY_KEY: Mapping[str, Setting] = {s.key: s for s in SETTINGS}


def setting_value(run_config: Mapping[str, object], key: str) -> bool | int | float | str:
    """The value of one setting from the run config (its default when absent), checked against its type."""
    setting = BY_KEY[key]
    value = run_config.get(key, setting.default)
    if setting.type is bool:
        if not isinstance(value, bool):
            raise ValueError(f"run config `{key}` must be true or false, got {value!r}")
    elif setting.type is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"run config `{key}` must be a finite number, got {value!r}")
        value = float(value)
    elif setting.type is str:
        value = str(value)
        if setting.choices and value not in setting.choices:
            raise ValueError(f"run config `{key}` is {value!r}; choose one of: {', '.join(setting.choices)}")
    return value


@dataclass(frozen=True)
class FederationSettings:
    """The typed values of SETTINGS for one run."""

    strategy: str
    proximal_mu: float
    server_lr: float
    beta1: float
    beta2: float
    tau: float
    local_norm: bool
    local_baseline: bool
    transport_dtype: str
    dp_noise_multiplier: float
    dp_clipping_norm: float
    dp_delta: float
    min_lesion_mm3: float

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, object]) -> "FederationSettings":
        values = {s.key.replace("-", "_"): setting_value(run_config, s.key) for s in SETTINGS}
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    @property
    def dp(self) -> bool:
        """Central differential privacy is on (a positive noise multiplier)."""
        return self.dp_noise_multiplier > 0

    def check(self) -> None:
        """Ranges: one ValueError naming the first bad setting."""
        problems = [
            (self.proximal_mu < 0, "proximal-mu", "at least 0"),
            (self.server_lr <= 0, "server-lr", "above 0"),
            (not 0 <= self.beta1 < 1, "beta1", "in [0, 1)"),
            (not 0 <= self.beta2 < 1, "beta2", "in [0, 1)"),
            (self.tau <= 0, "tau", "above 0"),
            (self.dp_noise_multiplier < 0, "dp-noise-multiplier", "at least 0 (0: no differential privacy)"),
            (self.dp_clipping_norm <= 0, "dp-clipping-norm", "above 0"),
            (not 0 < self.dp_delta < 1, "dp-delta", "in (0, 1)"),
            (self.min_lesion_mm3 < 0, "min-lesion-mm3", "at least 0 (0: no post-processing)"),
        ]
        for bad, key, expected in problems:
            if bad:
                raise ValueError(f"run config `{key}` must be {expected}, got {getattr(self, _attr(key))!r}")


def _attr(key: str) -> str:
    return key.replace("-", "_")
