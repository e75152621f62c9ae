"""OncoFed's disclosure policy: what a site lets leave about its patients, and why. Each rule is enforced here, at
the site, by the code named after it; the coordinator can neither switch a rule off nor lower a threshold.

The rules follow statistical disclosure control (SDC) practice for outputs leaving a trusted research
environment: DataSHIELD (dsBase `quantileMeanDS`, `nfilter.tab`, `nfilter.subset`), ACRO/SACRO (the default
output-checking rules of the SACRO project) and the Eurostat research data centre guidelines (Bond, Brandt &
de Wolf 2015). They apply to the aggregates every site sends after validating a model, to its one-off data
description, and to the model weights it sends after training.

R1 Threshold rule (k). No number about a set of fewer than `min-report-cases` cases leaves the site
   (default 5: Eurostat's "at least 5 entities per result"; DataSHIELD's `nfilter.tab` is 3 by default and
   5 "justifiable"). Below it the evaluate reply is "suppressed" and carries no number about the cases.
   [disclosure.evaluation_content]

R2 No single-observation statistics. Minimum, maximum and any other order statistic of the cases (including the
   quartiles numpy interpolates onto a single case, e.g. all three at n = 5) are never sent: Eurostat "raw
   min/max usually not allowed", DataSHIELD's `quantileMeanDS` never returns them, ACRO treats them as
   "endpoints". This covers voxel-spacing and image-size ranges too: none is sent. [aggregates.site_aggregates,
   released_overview]

R3 Position statistics (median, first and third quartile) only from `min-position-cases` cases on (default 10,
   ACRO's threshold for position statistics), and only as Harrell-Davis estimates (Harrell & Davis 1982,
   `scipy.stats.mstats.hdquantiles`): a weighted mean of all order statistics with positive weights, so never
   one case's value (unless all cases share it). Below the threshold they are withheld and the reply lists
   them in `withheld`. [aggregates.describe]

R4 Means with a 95 % percentile-bootstrap CI (2000 paired resamples) from k cases on. The resamples are seeded
   from the site's secret (site_app.site_secret: 32 random bytes in the work folder, created once, mode 0600,
   never sent) and the digest of the model being validated: the coordinator cannot replay them, and sending
   the same model again gives the same numbers, so repeated queries cannot average the resampling out.
   At small n the seed matters little (with 5 cases the 2.5 % point of 2000 resampled means is nearly always
   the same combination of cases, whatever the seed): what keeps mean and CI from being solved for the cases
   is that they are 3 equations in n >= 5 unknowns once R2 and R3 withhold every order statistic.
   [bootstrap_seed]

R5 Rounding. Every released statistic is rounded to the precision the report shows: Dice, surface Dice,
   sensitivity and precision to 0.001; HD95 to 0.1 mm; volume difference to 0.01 mL (RELEASE_DECIMALS).

R6 Differencing (DataSHIELD's weak spot, `nfilter.subset`; ACRO's "differencing" risk). Two results over sets
   that differ by one case give that case's values (n7·mean7 − n6·mean6). So:
   a) the site owns its validation split: made once, from the site secret, stored in the work folder
      (validation/split.json) and reused by every run; the coordinator's `val-fraction` and `seed` are
      ignored (the site log and each evaluate reply's conventions say so). The site's own
      `validation-fraction` (default 0.2) sets the share; cases added later are assigned by a keyed hash, and
      never move. [site_app.validation_split]
   b) a validation set is reported only when it is the set last reported, or differs from it by at least k
      cases (k = min-report-cases). Cases added since wait (the last reported set is reported) until k have
      accumulated; a case of the last reported set that cannot be validated now suppresses the report.
      [validation_split.released_set]
   c) the same holds for training sets, with k = min-train-cases: a site declines to train on a set that
      differs from the set it last trained on by fewer than min-train-cases cases, unless the old set is still
      available (then it trains on that).

R7 k for training. A site with fewer usable training cases than its `min-train-cases` (default 5) declines to
   train: its reply is "declined" with no weights, no loss and no count. [app.train]

R8 Counts. The data description sends the number of usable and excluded cases only when it is 0 or at least k
   (threshold rule for frequency tables); the number of cases skipped in a validation likewise. Outcome counts
   of a reported validation (empty masks, lesions found, missed, false) are sums over its k or more cases and
   are sent. [released_count]

R9 Site limits. Every run setting the site uses for its computation is checked against the site's own
   ranges before anything is loaded (site_app.site_limits); a run outside them is refused with the setting
   and the limit named.

Thresholds are the site's settings: node config keys `min-report-cases`, `min-position-cases`,
`min-train-cases`, `validation-fraction` (site.toml in a kit). A simulation has no node config (all sites are
the operator's own data on one machine): there the run config's "sim-" + key sets them, with the defaults below
except `sim-min-report-cases`, default 1.

What this policy does not cover: the weights themselves (a coordinator that crafts the model it sends, or
inverts gradients from updates, can learn about training cases beyond these aggregates: see site-side code
approval); outcome counts equal to n reveal a shared outcome of every case (e.g. "every case missed"); and the
coordinator's code runs at the site, so a site trusts the app it runs.
"""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from flwr.app import ArrayRecord, Context

from models.disclosure_wire import (
    MIN_POSITION_CASES,
    MIN_REPORT_CASES,
    MIN_TRAIN_CASES,
    VALIDATION_FRACTION,
)
from site_app.site_secret import keyed_seed

DEFAULTS: Mapping[str, int | float] = {
    MIN_REPORT_CASES: 5,
    MIN_POSITION_CASES: 10,
    MIN_TRAIN_CASES: 5,
    VALIDATION_FRACTION: 0.2,
}
SIMULATION_DEFAULTS: Mapping[str, int | float] = {**DEFAULTS, MIN_REPORT_CASES: 1}
SIMULATION_PREFIX = "sim-"

RELEASE_DECIMALS: Mapping[str, int] = {
    "dice": 3,
    "nsd": 3,
    "sensitivity": 3,
    "precision": 3,
    "hd95": 1,
    "avd": 2,
}
"""Decimal places of every released statistic of each metric (R5); `dice-mean` follows dice."""

POSITION_ESTIMATOR = "Harrell-Davis (scipy.stats.mstats.hdquantiles)"


@dataclass(frozen=True)
class DisclosurePolicy:
    """The site's thresholds (see the module docstring); read from the node config, never the run config."""

    min_report_cases: int
    min_position_cases: int
    min_train_cases: int
    validation_fraction: float

    @classmethod
    def from_configs(
        cls, node_config: Mapping[str, object], run_config: Mapping[str, object]
    ) -> "DisclosurePolicy":
        return cls(
            min_report_cases=_whole(site_setting(node_config, run_config, MIN_REPORT_CASES)),
            min_position_cases=_whole(site_setting(node_config, run_config, MIN_POSITION_CASES)),
            min_train_cases=_whole(site_setting(node_config, run_config, MIN_TRAIN_CASES)),
            validation_fraction=_fraction(site_setting(node_config, run_config, VALIDATION_FRACTION)),
        )

    @classmethod
    def from_context(cls, context: Context) -> "DisclosurePolicy":
        return cls.from_configs(context.node_config, context.run_config)


def deployed(node_config: Mapping[str, object]) -> bool:
    """A deployed site has a node config naming its data; a simulated one only a partition id."""
    return "data-path" in node_config


def site_setting(node_config: Mapping[str, object], run_config: Mapping[str, object], key: str) -> tuple:
    """(value, key, source) of a site-owned setting: the node config in deployment, "sim-" + key in simulation."""
    if deployed(node_config):
        return node_config.get(key, DEFAULTS[key]), key, "node config"
    sim_key = SIMULATION_PREFIX + key
    return run_config.get(sim_key, SIMULATION_DEFAULTS[key]), sim_key, "run config"


def _whole(setting: tuple) -> int:
    value, key, source = setting
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{source} `{key}` must be a whole number of at least 1, got {value!r}")
    return value


def _fraction(setting: tuple) -> float:
    value, key, source = setting
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ValueError(f"{source} `{key}` must be a fraction between 0 and 1 (e.g. 0.2), got {value!r}")
    return float(value)


def released_count(count: int, k: int) -> int | None:
    """A count of cases as it may leave (R8): itself when 0 or at least k, else None (withheld)."""
    return count if count == 0 or count >= k else None


def round_statistic(metric: str, value: float) -> float:
    """R5: the released precision of `metric` ("dice", "hd95", …; "dice-mean" as dice)."""
    return round(float(value), RELEASE_DECIMALS[metric.split("-")[0]])


def model_digest(arrays: ArrayRecord) -> bytes:
    """SHA-256 over the model's parameter names and bytes: the same weights give the same digest."""
    digest = hashlib.sha256()
    for name in sorted(arrays.keys()):
        digest.update(name.encode("utf-8"))
        digest.update(arrays[name].numpy().tobytes())
    return digest.digest()


def bootstrap_seed(secret: bytes, model: bytes, case_ids: list[str]) -> int:
    """R4: the bootstrap's seed, from the site secret, the model's digest and the validated set; never sent."""
    return keyed_seed(secret, "bootstrap", model, *sorted(case_ids))


def released_overview(counts: Mapping[str, int], k: int) -> dict[str, int]:
    """The data description as it may leave (R2, R8): counts of cases, each 0 or at least k; no ranges."""
    released = {key: released_count(int(counts[key]), k) for key in ("n-cases-usable", "n-cases-excluded")}
    return {key: value for key, value in released.items() if value is not None}


def policy_conventions(policy: DisclosurePolicy) -> dict[str, int | float | str | list[str]]:
    """The rules this reply was made under, for the coordinator's report (no case data)."""
    return {
        "min-position-cases": policy.min_position_cases,
        "min-train-cases": policy.min_train_cases,
        "position-estimator": POSITION_ESTIMATOR,
        "release-decimals": [f"{metric}: {decimals}" for metric, decimals in RELEASE_DECIMALS.items()],
        "bootstrap-seed": "site secret (not sent)",
        "validation-set": (
            f"site-owned: fixed split in the site's work folder (validation-fraction {policy.validation_fraction:g});"
            " the run's val-fraction and seed are not used; a changed set is reported only when it differs from"
            f" the last reported one by at least {policy.min_report_cases} cases"
        ),
        "disclosure-policy": "site_app/disclosure_policy.py (README, Privacy)",
    }
