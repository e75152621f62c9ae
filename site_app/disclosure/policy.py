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
   from the site's secret (site_app.settings.secret: 32 random bytes in the work folder, created once, mode 0600,
   never sent) and the released case set only, not the model: the coordinator cannot replay them, and any
   model validated on the same set gets the same resamples, so models that differ in one unused bit (same case
   values) cannot collect fresh CI endpoints to solve for the cases.
   At small n the seed matters little (with 5 cases the 2.5 % point of 2000 resampled means is nearly always
   the same combination of cases, whatever the seed): what keeps mean and CI from being solved for the cases
   is that they are 3 equations in n >= 5 unknowns once R2 and R3 withhold every order statistic.
   [bootstrap_seed]

R5 Rounding. Every released statistic is rounded to the precision the report shows: Dice, surface Dice,
   sensitivity and precision to 0.001; HD95 to 0.1 mm; volume difference to 0.01 mL (RELEASE_DECIMALS).

R6 Differencing (DataSHIELD's weak spot, `nfilter.subset`; ACRO's "differencing" risk). Two results over sets
   that differ by one case give that case's values (n7·mean7 − n6·mean6). So:
   a) the site owns its validation split: made once, from the site secret, stored in the work folder
      (validation/split.json) and reused by every run; no run setting chooses it and the run's `seed` is
      not used (the site log and each evaluate reply's conventions say so). The site's own
      `validation-fraction` (default 0.2) sets the share; cases added later are assigned by a keyed hash, and
      never move. [site_app.disclosure.validation_split]
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

R8b Local-only baseline (run setting `local-baseline`). The local-only model never leaves the site. Its
   aggregates follow R1-R5 and R6: only in a reported reply, only means and CIs (no position statistic, no count),
   over exactly the released validation cases (a set that differs is withheld), with the same secret-seeded
   resamples and rounding. [local_baseline.baseline_aggregates]

R8c Personalized model (run setting `personalize-epochs`). Fine-tuned on the released training set (R6), it never
   leaves the site; its aggregates and those of personalized − global follow R8b. [local_baseline.paired_aggregates]

R8d Post-processing is the site's (`min-lesion-mm3`, default 0: none). Were it a run setting, a coordinator
   sweeping it across evaluations would see lesion counts move by one and the mean volume difference by v/n
   at each single lesion's volume v: the site's own node config sets it (a simulation: `sim-min-lesion-mm3`), and
   a run's `min-lesion-mm3` is ignored. [site_app.settings.run_settings.SiteRunSettings.at_site]

R9 Site limits. Every run setting the site uses for its computation is checked against the site's own
   ranges before anything is loaded (site_app.settings.limits); a run outside them is refused with the setting
   and the limit named. Lower bounds too (batch size, patches per case, local steps per round): the conditions
   under which gradient inversion works best are refused (sources in site_app.settings.limits); and an
   evaluation budget per round and per run (site_app.disclosure.evaluation_budget). No refused,
   suppressed or declined reason carries a single case's figure or a count of changed cases below k.

Thresholds are the site's settings: node config keys `min-report-cases`, `min-position-cases`,
`min-train-cases`, `validation-fraction`, `min-lesion-mm3` (models.shared.node_config.POLICY_KEYS; site.toml in a kit, read by
site_app.settings.site_file with the checks below). A simulation has no node config (all sites are the operator's own
data on one machine): there the run settings "sim-" + key set them (models.shared.run_config, owner simulation), with
the defaults below except `sim-min-report-cases`, default 1.

A threshold below its default (DisclosurePolicy.lowered) needs `i-understand = true` in site.toml, and
`oncofed site check` and the site log name it.

What this policy does not cover: the weights themselves (a coordinator that crafts the model it sends, or
inverts gradients from updates, can learn about training cases beyond these aggregates: see site-side code
approval); outcome counts equal to n reveal a shared outcome of every case (e.g. "every case missed"); and the
coordinator's code runs at the site, so a site trusts the app it runs.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from models.shared.node_config import (
    DEFAULT_MIN_LESION_MM3,
    DEFAULT_MIN_POSITION_CASES,
    DEFAULT_MIN_REPORT_CASES,
    DEFAULT_MIN_TRAIN_CASES,
    DEFAULT_VALIDATION_FRACTION,
    NodeConfig,
)
from models.shared.run_config import (
    SIM_MIN_LESION_MM3,
    SIM_MIN_POSITION_CASES,
    SIM_MIN_REPORT_CASES,
    SIM_MIN_TRAIN_CASES,
    SIM_VALIDATION_FRACTION,
    RunSetting,
)
from models.shared.wire import Overview, Validation
from site_app.settings.secret import keyed_seed

if TYPE_CHECKING:  # type hints only: site.toml's parser imports this module and stays light
    from site_app.settings.run_settings import SiteRunSettings

DEFAULTS: Mapping[str, int | float] = {
    NodeConfig.MIN_REPORT_CASES: DEFAULT_MIN_REPORT_CASES,
    NodeConfig.MIN_POSITION_CASES: DEFAULT_MIN_POSITION_CASES,
    NodeConfig.MIN_TRAIN_CASES: DEFAULT_MIN_TRAIN_CASES,
    NodeConfig.VALIDATION_FRACTION: DEFAULT_VALIDATION_FRACTION,
    NodeConfig.MIN_LESION_MM3: DEFAULT_MIN_LESION_MM3,
}
"""A deployed site's thresholds when its node config does not set them."""

SIMULATION_SETTINGS: Mapping[str, RunSetting] = {
    NodeConfig.MIN_REPORT_CASES: SIM_MIN_REPORT_CASES,
    NodeConfig.MIN_POSITION_CASES: SIM_MIN_POSITION_CASES,
    NodeConfig.MIN_TRAIN_CASES: SIM_MIN_TRAIN_CASES,
    NodeConfig.VALIDATION_FRACTION: SIM_VALIDATION_FRACTION,
    NodeConfig.MIN_LESION_MM3: SIM_MIN_LESION_MM3,
}
"""The run setting that sets each threshold of a simulated site (models.shared.run_config, owner simulation)."""

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
    """The site's thresholds (see the module docstring); a deployed site's come from its node config only."""

    min_report_cases: int
    min_position_cases: int
    min_train_cases: int
    validation_fraction: float
    min_lesion_mm3: float = DEFAULT_MIN_LESION_MM3

    @classmethod
    def for_site(cls, node_config: Mapping[str, object], settings: "SiteRunSettings") -> "DisclosurePolicy":
        """A deployed site's policy from its node config (the run config cannot change it); a simulated site's
        from the run's "sim-" settings."""
        if deployed(node_config):
            return cls.from_node_config(node_config)
        simulated = {
            NodeConfig.MIN_REPORT_CASES: settings.sim_min_report_cases,
            NodeConfig.MIN_POSITION_CASES: settings.sim_min_position_cases,
            NodeConfig.MIN_TRAIN_CASES: settings.sim_min_train_cases,
            NodeConfig.VALIDATION_FRACTION: settings.sim_validation_fraction,
            NodeConfig.MIN_LESION_MM3: settings.sim_min_lesion_mm3,
        }
        return cls._checked(simulated, lambda key: f"run setting `{SIMULATION_SETTINGS[key].key}`")

    @classmethod
    def from_node_config(
        cls, node_config: Mapping[str, object], source: str = "node config "
    ) -> "DisclosurePolicy":
        """The thresholds a site sets (models.shared.node_config.POLICY_KEYS), DEFAULTS for the others. A wrong value raises
        ValueError naming `source` (e.g. "node config ", "<path>: ") and the key."""
        values = {key: node_config.get(key, default) for key, default in DEFAULTS.items()}
        return cls._checked(values, lambda key: f"{source}`{key}`")

    @classmethod
    def _checked(cls, values: Mapping[str, object], name: Callable[[str], str]) -> "DisclosurePolicy":
        return cls(
            min_report_cases=_whole(values, NodeConfig.MIN_REPORT_CASES, name),
            min_position_cases=_whole(values, NodeConfig.MIN_POSITION_CASES, name),
            min_train_cases=_whole(values, NodeConfig.MIN_TRAIN_CASES, name),
            validation_fraction=_fraction(values, NodeConfig.VALIDATION_FRACTION, name),
            min_lesion_mm3=_volume(values, NodeConfig.MIN_LESION_MM3, name),
        )

    def lowered(self) -> list[str]:
        """The thresholds this site set below their defaults, as "key = value (default d)": fewer cases stand
        behind each number that leaves, so site.toml needs `i-understand = true` and the site log says so."""
        values = {
            NodeConfig.MIN_REPORT_CASES: self.min_report_cases,
            NodeConfig.MIN_POSITION_CASES: self.min_position_cases,
            NodeConfig.MIN_TRAIN_CASES: self.min_train_cases,
        }
        return [
            f"{key} = {value} (default {DEFAULTS[key]})"
            for key, value in values.items()
            if value < DEFAULTS[key]
        ]


def deployed(node_config: Mapping[str, object]) -> bool:
    """A deployed site has a node config naming its data; a simulated one only a partition id."""
    return NodeConfig.DATA_PATH in node_config


def _whole(values: Mapping[str, object], key: str, name: Callable[[str], str]) -> int:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name(key)} must be a whole number of at least 1, got {value!r}")
    return value


def _fraction(values: Mapping[str, object], key: str, name: Callable[[str], str]) -> float:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ValueError(f"{name(key)} must be a fraction between 0 and 1 (e.g. 0.2), got {value!r}")
    return float(value)


def _volume(values: Mapping[str, object], key: str, name: Callable[[str], str]) -> float:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name(key)} must be a volume in mm³ of at least 0, got {value!r}")
    return float(value)


def released_count(count: int, k: int) -> int | None:
    """A count of cases as it may leave (R8): itself when 0 or at least k, else None (withheld)."""
    return count if count == 0 or count >= k else None


def round_statistic(metric: str, value: float) -> float:
    """R5: the released precision of `metric` ("dice", "hd95", …; "dice-mean" as dice)."""
    return round(float(value), RELEASE_DECIMALS[metric.split("-")[0]])


def bootstrap_seed(secret: bytes, case_ids: list[str]) -> int:
    """R4: the bootstrap's seed, from the site secret and the released case set only; never sent. Not from the
    model: a coordinator that sends models differing in one unused bit would otherwise get the same case values
    with fresh resamples, and each CI endpoint is an integer combination of the sorted case values."""
    return keyed_seed(secret, "bootstrap", *sorted(case_ids))


def released_overview(counts: Mapping[str, int], k: int) -> dict[str, int]:
    """The data description as it may leave (R2, R8): counts of cases, each 0 or at least k; no ranges."""
    keys = (Overview.N_CASES_USABLE, Overview.N_CASES_EXCLUDED)
    released = {key: released_count(int(counts[key]), k) for key in keys}
    return {key: value for key, value in released.items() if value is not None}


def policy_conventions(policy: DisclosurePolicy) -> dict[str, int | float | str | list[str]]:
    """The rules this reply was made under, for the coordinator's report (no case data)."""
    return {
        Validation.MIN_POSITION_CASES: policy.min_position_cases,
        Validation.MIN_TRAIN_CASES: policy.min_train_cases,
        Validation.POSITION_ESTIMATOR: POSITION_ESTIMATOR,
        Validation.RELEASE_DECIMALS: [
            f"{metric}: {decimals}" for metric, decimals in RELEASE_DECIMALS.items()
        ],
        Validation.BOOTSTRAP_SEED: "site secret and released case set (not sent; not the model)",
        Validation.MIN_LESION_MM3: policy.min_lesion_mm3,
        Validation.VALIDATION_SET: (
            f"site-owned: fixed split in the site's work folder (validation-fraction {policy.validation_fraction:g});"
            " no run setting chooses it and the run's seed is not used; a changed set is reported only when it"
            " differs from"
            f" the last reported one by at least {policy.min_report_cases} cases"
        ),
        Validation.DISCLOSURE_POLICY: "site_app/disclosure/policy.py (README, Privacy)",
    }
