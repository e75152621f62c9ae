"""Every run setting (pyproject.toml's `[tool.flwr.app.config]`): key, owner, type, default, meaning; one job: the one registry.

The owner is the side whose code reads a setting:

- coordinator: the ServerApp only (server_app.coordinator_settings.ServerRunSettings);
- site: each site's ClientApp only (site_app.settings.run_settings.SiteRunSettings), with the value the coordinator
  chose for the run;
- shared: both sides, which must use the same value (the model preset, the seed);
- simulation: only the sites of `oncofed simulate` (a deployed site takes these from its own node config).

pyproject.toml's table is grouped by owner; tests/unit/test_run_config.py holds it and RUN_SETTINGS to the
same keys, types and defaults, and checks that each side reads exactly the settings it owns.
A run config holds every key (Flower fills in the pyproject defaults); a setting missing from a mapping, e.g.
in the run config stored by an older version, reads as its default.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Generic, TypeVar

from models.shared.node_config import (
    DEFAULT_LOCAL_DP_CLIPPING_NORM,
    DEFAULT_LOCAL_DP_NOISE_MULTIPLIER,
    DEFAULT_MIN_LESION_MM3,
    DEFAULT_MIN_POSITION_CASES,
    DEFAULT_MIN_TRAIN_CASES,
    DEFAULT_VALIDATION_FRACTION,
)

T = TypeVar("T", bool, int, float, str)

UPDATE_NORM_BOUND_DEFAULT = 10.0
"""The default `update-norm-bound`: ~1.5 × the largest honest update norm measured with the `small` preset (6.8;
server_app.strategies.update_norm has the numbers), far below a scaled one."""


class Owner(StrEnum):
    COORDINATOR = "coordinator"
    SITE = "site"
    SHARED = "shared"
    SIMULATION = "simulation"


class RunConfigError(ValueError):
    """A run setting has the wrong type or is out of range; the message names the key and what it holds."""


@dataclass(frozen=True)
class RunSetting(Generic[T]):
    key: str
    owner: Owner
    type: type[T]
    default: T
    doc: str
    minimum: float | None = None
    """Smallest valid value (numbers only); None: any."""
    choices: tuple[str, ...] = ()
    """The values a string setting accepts; empty: any string."""

    def read(self, run_config: Mapping[str, object]) -> T:
        """This setting's value in a run config, type-checked; RunConfigError names the key and the fix."""
        value = run_config.get(self.key, self.default)
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (isinstance(value, bool) != (self.type is bool)) or not isinstance(value, self.type):
            raise RunConfigError(
                f"run setting `{self.key}` is {value!r}, expected {_KIND[self.type]} ({self.doc})"
            )
        if self.minimum is not None and value < self.minimum:
            raise RunConfigError(
                f"run setting `{self.key}` is {value!r}, expected at least {self.minimum:g} ({self.doc})"
            )
        if self.type is float and not math.isfinite(value):
            raise RunConfigError(
                f"run setting `{self.key}` is {value!r}, expected a finite number ({self.doc})"
            )
        if self.choices and value not in self.choices:
            raise RunConfigError(
                f"run setting `{self.key}` is {value!r}, expected one of {', '.join(self.choices)} ({self.doc})"
            )
        return value

    def refuse(self, value: object, expected: str) -> "RunConfigError":
        """The error for a value this setting's own checks pass but a further rule refuses (a range bound other
        than `minimum`, or a combination with another setting): names the key, the value and what is expected."""
        return RunConfigError(f"run setting `{self.key}` is {value!r}, expected {expected} ({self.doc})")


_KIND = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}

# shared
MODEL_PRESET = RunSetting(
    "model-preset", Owner.SHARED, str, "small", "tiny | small | large (models/presets.py)"
)
SEED = RunSetting(
    "seed",
    Owner.SHARED,
    int,
    0,
    "seed of the initial model and the sites' augmentation (a site's split and bootstrap use its own secret)",
)

# The preprocessing the model is trained with: the sites preprocess with it, and the coordinator records it in
# every checkpoint's meta, so that `site predict` and `oncofed export` rebuild it from the model alone.
PATCH_SIZE = RunSetting(
    "patch-size",
    Owner.SHARED,
    int,
    0,
    "edge of the cubic training patch in voxels at spacing-mm; 0: the model preset's patch_size",
    0,
)
SPACING_MM = RunSetting(
    "spacing-mm", Owner.SHARED, float, 2.0, "isotropic voxel edge every site resamples to, mm", 0
)
# Which weights travel, and how: the coordinator builds the shared model and decodes replies with them, the sites
# keep their norm layers and encode their replies with them.
LOCAL_NORM = RunSetting(
    "local-norm",
    Owner.SHARED,
    bool,
    False,
    "site-local normalization (FedBN-style): the norm layers' scale and shift stay at each site, are neither"
    " sent nor averaged, and each site validates its personalized model",
)
TRANSPORT_DTYPES = ("float32", "float16")
TRANSPORT_DTYPE = RunSetting(
    "transport-dtype",
    Owner.SHARED,
    str,
    "float32",
    "precision of the weights in messages, both ways; training and aggregation stay in float32",
    choices=TRANSPORT_DTYPES,
)

# coordinator
NUM_SERVER_ROUNDS = RunSetting(
    "num-server-rounds", Owner.COORDINATOR, int, 5, "rounds of training after validating the initial model", 1
)
MIN_SITES = RunSetting(
    "min-sites",
    Owner.COORDINATOR,
    int,
    2,
    "the quorum: sites online to start a round, and sound training replies to change the global model"
    " (`oncofed run` and `simulate` default it to a majority of the sites)",
    1,
)
# Deadlines are for real hospitals on CPUs: a train phase of a 3D UNet can take tens of minutes, and a site's
# server may reboot for a patch window. Tests set them to seconds.
WAIT_FOR_SITES_S = RunSetting(
    "wait-for-sites-s",
    Owner.COORDINATOR,
    float,
    1800.0,
    "how long, before each round, to wait for min-sites sites to be online; then the run stops naming the"
    " offline sites (continue it with --resume), s",
    0.1,
)
DESCRIBE_TIMEOUT_S = RunSetting(
    "describe-timeout-s",
    Owner.COORDINATOR,
    float,
    300.0,
    "how long a newly seen site has to describe itself (its first answer may build its data inventory), s",
    0.1,
)
TRAIN_TIMEOUT_S = RunSetting(
    "train-timeout-s",
    Owner.COORDINATOR,
    float,
    3600.0,
    "deadline of a round's training phase: it closes when every selected site replied or this passed, s",
    0.1,
)
EVALUATE_TIMEOUT_S = RunSetting(
    "evaluate-timeout-s",
    Owner.COORDINATOR,
    float,
    1800.0,
    "deadline of a round's validation phase (same rule as train-timeout-s), s",
    0.1,
)
EXPECTED_SITES = RunSetting(
    "expected-sites",
    Owner.COORDINATOR,
    str,
    "",
    "comma-separated names of the federation's sites, so that one that never connects is named offline; set"
    " by `oncofed run` (the kit's sites) and `simulate` (the site folders); empty: only sites seen are named",
)
RESUME = RunSetting(
    "resume",
    Owner.COORDINATOR,
    bool,
    False,
    "continue the run in run-dir after the round of its checkpoint; set by `--resume`, never by hand",
)
INIT_MODEL = RunSetting(
    "init-model",
    Owner.COORDINATOR,
    str,
    "",
    "a global model saved by an earlier run (models/final.pt, best.pt or latest.pt) of the same model preset"
    " to start from instead of a fresh one; set by `oncofed run --init`",
)
RUN_DIR = RunSetting(
    "run-dir",
    Owner.COORDINATOR,
    str,
    "",
    "absolute path of the run folder the ServerApp writes; set by the launcher",
)
TRACKING_URI = RunSetting(
    "tracking-uri",
    Owner.COORDINATOR,
    str,
    "",
    "MLflow tracking URI the run's records are copied to after every round (e.g. http://mlflow.example:5000);"
    " empty: an MLflow store inside the run folder (sqlite:///RUN_DIR/mlflow.db); none: no copy; set by"
    " `--tracking-uri`",
)
STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedmedian", "fedtrimmedavg", "krum", "multikrum")
STRATEGY = RunSetting(
    "strategy",
    Owner.COORDINATOR,
    str,
    "fedavg",
    "how the sites' weights become the next global model: fedavg (mean weighted by training cases), fedprox"
    " (the same mean; the sites add a proximal term), fedadam / fedyogi (a server optimizer on the averaged"
    " update), fedmedian (coordinate-wise median), fedtrimmedavg (mean without the trim-beta extremes of each"
    " coordinate), krum / multikrum (the update(s) closest to the others, num-malicious-nodes tolerated)",
    choices=STRATEGIES,
)
TRIM_BETA = RunSetting(
    "trim-beta",
    Owner.COORDINATOR,
    float,
    0.2,
    "fedtrimmedavg: fraction of the updates cut at each end of every coordinate before the mean, in [0, 0.5)",
    0,
)
NUM_MALICIOUS_NODES = RunSetting(
    "num-malicious-nodes",
    Owner.COORDINATOR,
    int,
    1,
    "krum / multikrum: the malicious sites to tolerate, f; the federation needs at least 2f + 3 sites",
    0,
)
MAX_SITE_WEIGHT = RunSetting(
    "max-site-weight",
    Owner.COORDINATOR,
    float,
    0.5,
    "the largest share of the mean one site's update may have (its claimed cases over all; the others"
    " renormalised); 1: no cap",
    0,
)
MAX_CASES = RunSetting(
    "max-cases",
    Owner.COORDINATOR,
    str,
    "",
    "per-site bound on the cases a site may weigh with, `site=N` comma-separated (e.g. from the federation"
    " spec); a site not named is bounded by the usable cases of its first description only",
)
UPDATE_NORM_BOUND = RunSetting(
    "update-norm-bound",
    Owner.COORDINATOR,
    float,
    UPDATE_NORM_BOUND_DEFAULT,
    "L2 norm every site's update (its weights minus the global weights) is clipped to before aggregation;"
    " 0: no bound (each update's norm is recorded either way)",
    0,
)
LR_SCHEDULES = ("cosine", "constant")
"""The values of `lr-schedule`: the share of each site's own learning rate a round trains with."""
LR_SCHEDULE = RunSetting(
    "lr-schedule",
    Owner.COORDINATOR,
    str,
    "constant",
    "share of each site's learning rate per round: constant (1) | cosine (from 1 at round 1 down to"
    " `lr-final-share` at the last round); the coordinator sends it in each train instruction"
    " (models.shared.wire.LR_SCALE)",
    choices=LR_SCHEDULES,
)
LR_FINAL_SHARE = RunSetting(
    "lr-final-share",
    Owner.COORDINATOR,
    float,
    0.1,
    "lr-schedule cosine: the share of the sites' learning rate at the last round, in (0, 1]",
    0,
)
PATIENCE = RunSetting(
    "patience",
    Owner.COORDINATOR,
    int,
    0,
    "stop the run after this many rounds in a row in which the global model did not beat the best one under the"
    " paired rule (the rule that picks best.pt); 0: run every round",
    0,
)
ROUND_MESSAGE_PATTERNS = ("one", "two")
"""The values of `round-messages`: how many messages a round sends each site."""
ROUND_MESSAGES = RunSetting(
    "round-messages",
    Owner.COORDINATOR,
    str,
    "one",
    "messages per site per round: one (the train instruction of round r carries the model round r - 1 ended"
    " with, which the site validates before training on it; one validate-only message after the last round) |"
    " two (a train and then a validate message each round); same numbers either way. secure-aggregation always"
    " uses two",
    choices=ROUND_MESSAGE_PATTERNS,
)
SECURE_AGGREGATION = RunSetting(
    "secure-aggregation",
    Owner.COORDINATOR,
    bool,
    False,
    "SecAgg+ (Flower's protocol): the coordinator learns only the weighted sum of the sites' updates, never one"
    " site's; each site clips its update to update-norm-bound (> 0) and weighs it by its capped case count before"
    " masking. Still checked per site: the masked vector's shapes and the case count; no longer: values, norms"
    " (not recorded), non-finite entries. Needs a mean-based strategy (fedavg, fedprox, fedadam, fedyogi): robust"
    " strategies and central DP need plaintext updates. Costs three short message exchanges per round and"
    " quantization (error ~ update-norm-bound / 2^21 per weight)",
)
UPDATE_NORM_MEDIAN_FACTOR = RunSetting(
    "update-norm-median-factor",
    Owner.COORDINATOR,
    float,
    5.0,
    "every site's update is also clipped to this multiple of the median of the round's update norms (the"
    " scale of an honest update, whatever the model, while fewer than half the sites attack); 0: off",
    0,
)
UPDATE_NORM_DROP_FACTOR = RunSetting(
    "update-norm-drop-factor",
    Owner.COORDINATOR,
    float,
    10.0,
    "an update whose norm is above this multiple of the median of the round's update norms is left out, not"
    " clipped (no honest training result is that far from the others); 0: off",
    0,
)
UPDATE_MIN_COSINE = RunSetting(
    "update-min-cosine",
    Owner.COORDINATOR,
    float,
    0.2,
    "the update of a site claiming more than `max-site-weight` of the round's cases (every update without a"
    " cap) is left out when its mean cosine similarity with the median of the others' updates, over the run so"
    " far, is below this and its cosines do not rise and fall with the uncapped sites' (alignment below 0.6,"
    " server_app/strategies/update_direction.py); -1: off",
    -1,
)
PROXIMAL_MU = RunSetting(
    "proximal-mu",
    Owner.COORDINATOR,
    float,
    0.01,
    "fedprox: weight μ of the proximal term μ/2·‖w − w_global‖² the sites add to their loss; the coordinator"
    " sends it in each train instruction's config (models.shared.wire.PROXIMAL_MU)",
    0,
)
SERVER_LR = RunSetting(
    "server-lr",
    Owner.COORDINATOR,
    float,
    0.03,
    "fedadam/fedyogi: server learning rate η (0.03: the best of 0.001–0.1 for both in bench/server_lr.py)",
    0,
)
BETA1 = RunSetting("beta1", Owner.COORDINATOR, float, 0.9, "fedadam/fedyogi: decay of the first moment", 0)
BETA2 = RunSetting("beta2", Owner.COORDINATOR, float, 0.99, "fedadam/fedyogi: decay of the second moment", 0)
TAU = RunSetting("tau", Owner.COORDINATOR, float, 0.001, "fedadam/fedyogi: adaptivity τ added to √v", 0)
DP_NOISE_MULTIPLIER = RunSetting(
    "dp-noise-multiplier",
    Owner.COORDINATOR,
    float,
    0.0,
    "central differential privacy when > 0: Gaussian noise σ = multiplier × clipping norm / number of sites on"
    " the mean of the clipped updates (Flower's server-side fixed clipping); 0: off",
    0,
)
DP_CLIPPING_NORM = RunSetting(
    "dp-clipping-norm",
    Owner.COORDINATOR,
    float,
    1.0,
    "central DP: L2 norm every site's update (its weights minus the global weights) is clipped to",
    0,
)
DP_DELTA = RunSetting(
    "dp-delta",
    Owner.COORDINATOR,
    float,
    1e-5,
    "central DP: the δ at which ε is reported (Flower's RDP accountant, site-level add-or-remove-one)",
    0,
)

# site
LOCAL_EPOCHS = RunSetting("local-epochs", Owner.SITE, int, 3, "epochs each site trains per round", 1)
LEARNING_RATE = RunSetting("learning-rate", Owner.SITE, float, 0.002, "Adam's learning rate", 0)
BATCH_SIZE = RunSetting(
    "batch-size", Owner.SITE, int, 2, "training patches per step (a deployed site's batch-size-min is 2)", 1
)
SAMPLES_PER_CASE = RunSetting(
    "samples-per-case",
    Owner.SITE,
    int,
    4,
    "patches drawn per case per epoch (centred on each label in turn)",
    1,
)
EVAL_REGIONS = RunSetting(
    "eval-regions", Owner.SITE, str, "brats", "brats (wt, tc, et) | per-class (one region per label)"
)
LOCAL_BASELINE = RunSetting(
    "local-baseline",
    Owner.SITE,
    bool,
    False,
    "each site also trains a local-only model (same initial weights, same per-round budget) that stays in its"
    " work folder, and reports aggregates of it and of the paired difference global − local-only",
)
PERSONALIZE_EPOCHS = RunSetting(
    "personalize-epochs",
    Owner.SITE,
    int,
    0,
    "epochs each site fine-tunes the global model on its own training cases at each validation; the"
    " personalized model stays in its work folder and only its aggregates leave; 0: off",
    0,
)
PERSONALIZE_LR_SHARE = RunSetting(
    "personalize-lr-share",
    Owner.SITE,
    float,
    0.1,
    "share of the site's learning rate the personalized model is fine-tuned at, in (0, 1]: the global model"
    " has converged at the schedule's low end of the rate, and fine-tuning it at the full rate undoes that",
    0,
)

# simulation
SIM_MIN_REPORT_CASES = RunSetting(
    "sim-min-report-cases",
    Owner.SIMULATION,
    int,
    1,
    "a simulated site's min-report-cases (a deployed site sets its own in its node config)",
    1,
)
SIM_MIN_POSITION_CASES = RunSetting(
    "sim-min-position-cases",
    Owner.SIMULATION,
    int,
    DEFAULT_MIN_POSITION_CASES,
    "a simulated site's min-position-cases, the fewest validation cases for medians and quartiles",
    1,
)
SIM_MIN_TRAIN_CASES = RunSetting(
    "sim-min-train-cases",
    Owner.SIMULATION,
    int,
    DEFAULT_MIN_TRAIN_CASES,
    "a simulated site's min-train-cases, the fewest training cases it trains on",
    1,
)
SIM_VALIDATION_FRACTION = RunSetting(
    "sim-validation-fraction",
    Owner.SIMULATION,
    float,
    DEFAULT_VALIDATION_FRACTION,
    "a simulated site's validation-fraction, the share of its cases in its own validation split",
    0,
)
SIM_MIN_LESION_MM3 = RunSetting(
    "sim-min-lesion-mm3",
    Owner.SIMULATION,
    float,
    DEFAULT_MIN_LESION_MM3,
    "a simulated site's min-lesion-mm3: predicted tumor components (26-connectivity) smaller than this volume,"
    " mm³, are removed before measuring; 0 keeps every component (a deployed site sets its own)",
    0,
)
SIM_SHARE_LOCAL_MODEL = RunSetting(
    "sim-share-local-model-for-evaluation",
    Owner.SIMULATION,
    str,
    "",
    "the simulated sites (names, comma-separated) that consent to share their local-only model for evaluation"
    " at the other consenting sites (a deployed site sets share-local-model-for-evaluation in its node config)",
)
SIM_LOCAL_DP_NOISE_MULTIPLIER = RunSetting(
    "sim-local-dp-noise-multiplier",
    Owner.SIMULATION,
    float,
    DEFAULT_LOCAL_DP_NOISE_MULTIPLIER,
    "a simulated site's local DP: > 0 adds Gaussian noise σ = this × sim-local-dp-clipping-norm to its clipped"
    " training update before it leaves (before masking under secure-aggregation); ε per site in its log; 0: off"
    " (a deployed site sets local-dp-noise-multiplier in its node config)",
    0,
)
SIM_LOCAL_DP_CLIPPING_NORM = RunSetting(
    "sim-local-dp-clipping-norm",
    Owner.SIMULATION,
    float,
    DEFAULT_LOCAL_DP_CLIPPING_NORM,
    "a simulated site's local DP: the L2 norm it clips its update to before adding noise",
    0,
)
SIM_DATA = RunSetting(
    "sim-data", Owner.SIMULATION, str, "", "folder holding one sub-folder per simulated site"
)
SIM_WORK = RunSetting("sim-work", Owner.SIMULATION, str, "", "folder for the simulated sites' work folders")

RUN_SETTINGS: tuple[RunSetting, ...] = (
    MODEL_PRESET,
    SEED,
    PATCH_SIZE,
    SPACING_MM,
    LOCAL_NORM,
    TRANSPORT_DTYPE,
    NUM_SERVER_ROUNDS,
    MIN_SITES,
    WAIT_FOR_SITES_S,
    DESCRIBE_TIMEOUT_S,
    TRAIN_TIMEOUT_S,
    EVALUATE_TIMEOUT_S,
    EXPECTED_SITES,
    RESUME,
    INIT_MODEL,
    RUN_DIR,
    TRACKING_URI,
    STRATEGY,
    PROXIMAL_MU,
    SERVER_LR,
    BETA1,
    BETA2,
    TAU,
    DP_NOISE_MULTIPLIER,
    DP_CLIPPING_NORM,
    DP_DELTA,
    TRIM_BETA,
    NUM_MALICIOUS_NODES,
    MAX_SITE_WEIGHT,
    MAX_CASES,
    UPDATE_NORM_BOUND,
    LR_SCHEDULE,
    LR_FINAL_SHARE,
    PATIENCE,
    ROUND_MESSAGES,
    SECURE_AGGREGATION,
    UPDATE_NORM_MEDIAN_FACTOR,
    UPDATE_NORM_DROP_FACTOR,
    UPDATE_MIN_COSINE,
    LOCAL_EPOCHS,
    LEARNING_RATE,
    BATCH_SIZE,
    SAMPLES_PER_CASE,
    EVAL_REGIONS,
    LOCAL_BASELINE,
    PERSONALIZE_EPOCHS,
    PERSONALIZE_LR_SHARE,
    SIM_MIN_REPORT_CASES,
    SIM_MIN_POSITION_CASES,
    SIM_MIN_TRAIN_CASES,
    SIM_VALIDATION_FRACTION,
    SIM_MIN_LESION_MM3,
    SIM_SHARE_LOCAL_MODEL,
    SIM_LOCAL_DP_NOISE_MULTIPLIER,
    SIM_LOCAL_DP_CLIPPING_NORM,
    SIM_DATA,
    SIM_WORK,
)
"""Every run setting, in the order of pyproject.toml's table."""

SETTINGS_BY_KEY: Mapping[str, RunSetting] = MappingProxyType({s.key: s for s in RUN_SETTINGS})


def owned_by(*owners: Owner) -> tuple[RunSetting, ...]:
    """The settings of these owners, in registry order."""
    return tuple(s for s in RUN_SETTINGS if s.owner in owners)


def defaults() -> dict[str, bool | int | float | str]:
    """Every setting at its default: the run config of a run that overrides nothing."""
    return {s.key: s.default for s in RUN_SETTINGS}


TRAINING_SETTINGS: tuple[RunSetting, ...] = (
    NUM_SERVER_ROUNDS,
    LOCAL_EPOCHS,
    LEARNING_RATE,
    BATCH_SIZE,
    PATCH_SIZE,
    SAMPLES_PER_CASE,
    SPACING_MM,
    MODEL_PRESET,
    MIN_SITES,
    SEED,
    STRATEGY,
    PROXIMAL_MU,
    SERVER_LR,
    BETA1,
    BETA2,
    TAU,
    LOCAL_NORM,
    TRANSPORT_DTYPE,
    DP_NOISE_MULTIPLIER,
    DP_CLIPPING_NORM,
    DP_DELTA,
    TRIM_BETA,
    NUM_MALICIOUS_NODES,
    MAX_SITE_WEIGHT,
    MAX_CASES,
    UPDATE_NORM_BOUND,
    LR_SCHEDULE,
    LR_FINAL_SHARE,
    PATIENCE,
    SECURE_AGGREGATION,
    UPDATE_NORM_MEDIAN_FACTOR,
    UPDATE_NORM_DROP_FACTOR,
    UPDATE_MIN_COSINE,
)
"""The settings that describe how a model was trained: the report's methods, the model card and an exported
bundle's training summary all list these."""


RESUMABLE_CHANGES: tuple[RunSetting, ...] = (
    MIN_SITES,
    WAIT_FOR_SITES_S,
    DESCRIBE_TIMEOUT_S,
    TRAIN_TIMEOUT_S,
    EVALUATE_TIMEOUT_S,
    ROUND_MESSAGES,
    TRACKING_URI,
)
"""The settings a resumed run may change: they decide when rounds run and where they are tracked, not what a round
computes."""


def majority(n_sites: int) -> int:
    """The default min-sites of `oncofed run` and `simulate`: more than half of the sites (1 of 1, 2 of 2 or 3,
    3 of 4 or 5)."""
    return n_sites // 2 + 1
