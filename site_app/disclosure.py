"""What a site discloses about its validation: aggregates under the disclosure policy, or nothing at all.

The rules, their sources and their thresholds are in site_app.disclosure_policy; this module builds the evaluate
reply from them. The minimum (`min-report-cases`, default 5) is the site's own setting: its node config in
deployment, which the coordinator's run config cannot lower. A simulation has no node config (all sites are the
operator's own data on one machine): there the run config's `sim-min-report-cases` sets it, default 1.

The evaluate reply holds one ConfigRecord "validation" (status "reported", "suppressed" or "refused", the
site's minimum, a `reason` unless reported, the statistics the policy withheld, and the metric conventions),
and, only when reported, one MetricRecord "metrics" with the aggregates and `num-examples`.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version

from flwr.app import ConfigRecord, Context, MetricRecord, RecordDict

from models.disclosure_wire import MIN_REPORT_CASES, REASON_KEY, REFUSED
from site_app.aggregates import BOOTSTRAP_RESAMPLES, CI_LEVEL, POSITION_STATS, site_aggregates
from site_app.disclosure_policy import (
    DEFAULTS,
    SIMULATION_DEFAULTS,
    DisclosurePolicy,
    policy_conventions,
    released_count,
)
from site_app.metrics import (
    COUNTS,
    HD95_PENALTY_MM,
    METRICS,
    NSD_TOLERANCE_MM,
    evaluation_regions,
    metric_settings,
)
from site_app.validation import CaseEvaluation

DEFAULT_MIN_REPORT_CASES = DEFAULTS[MIN_REPORT_CASES]
SIMULATION_MIN_REPORT_CASES = SIMULATION_DEFAULTS[MIN_REPORT_CASES]
REPORTED, SUPPRESSED = "reported", "suppressed"


@dataclass(frozen=True)
class ValidationPolicy:
    """How this site validates and what it discloses: regions and the site's disclosure thresholds."""

    regions: Mapping[str, tuple[int, ...]]
    region_set: str
    disclosure: DisclosurePolicy

    @property
    def min_report_cases(self) -> int:
        return self.disclosure.min_report_cases

    @classmethod
    def from_context(cls, context: Context) -> "ValidationPolicy":
        region_set = str(context.run_config.get("eval-regions", "brats"))
        return cls(
            regions=evaluation_regions(region_set),
            region_set=region_set,
            disclosure=DisclosurePolicy.from_context(context),
        )


def min_report_cases(node_config: Mapping[str, object], run_config: Mapping[str, object]) -> int:
    """The site's minimum number of validation cases for any number to leave it (see the module docstring)."""
    return DisclosurePolicy.from_configs(node_config, run_config).min_report_cases


def conventions(policy: ValidationPolicy) -> dict[str, str | int | float | list[str]]:
    """The metric definitions and settings this site used, for the coordinator's methods section."""
    return {
        "eval-regions": policy.region_set,
        "regions": list(policy.regions),
        "region-labels": ["+".join(str(v) for v in values) for values in policy.regions.values()],
        "metrics": list(METRICS),
        "counts": list(COUNTS),
        "hd95-penalty-mm": HD95_PENALTY_MM,
        "nsd-tolerance-mm": NSD_TOLERANCE_MM,
        "ci-level": CI_LEVEL,
        "bootstrap-resamples": BOOTSTRAP_RESAMPLES,
        **policy_conventions(policy.disclosure),
        "settings": [f"{name}: {text}" for name, text in metric_settings().items()],
        "software": [f"{name} {version(name)}" for name in ("oncofed", "monai", "torch", "numpy", "scipy")],
    }


def evaluation_content(
    results: Sequence[CaseEvaluation], n_skipped: int, policy: ValidationPolicy, bootstrap_seed: int
) -> RecordDict:
    """The evaluate reply's content: aggregates when the site has at least its minimum of cases, else none.

    `results` are the cases of a releasable set (validation_split.released_set); `bootstrap_seed` comes from
    disclosure_policy.bootstrap_seed and is not sent.
    """
    k = policy.min_report_cases
    if len(results) < k:
        return suppressed_content(policy, f"n < {k}")  # fewer validation cases than the site's minimum
    n_position = policy.disclosure.min_position_cases
    withheld = [] if len(results) >= n_position else [f"{s} (n < {n_position})" for s in POSITION_STATS]
    aggregates = site_aggregates(
        [r.metrics for r in results], list(policy.regions), bootstrap_seed, n_position
    )
    skipped = released_count(n_skipped, k)
    if skipped is None:
        withheld.append(f"n-skipped (between 1 and {k - 1})")
    metrics = MetricRecord(
        {**aggregates, **({} if skipped is None else {"n-skipped": skipped}), "num-examples": len(results)}
    )
    validation = {**conventions(policy), "min-report-cases": k, "status": REPORTED, "withheld": withheld}
    return RecordDict({"validation": ConfigRecord(validation), "metrics": metrics})


def suppressed_content(policy: ValidationPolicy, reason: str) -> RecordDict:
    """An evaluate reply with no number about the cases: the site's minimum, the reason, the conventions."""
    validation = {**conventions(policy), "min-report-cases": policy.min_report_cases, REASON_KEY: reason}
    return RecordDict({"validation": ConfigRecord({**validation, "status": SUPPRESSED})})


def refused_evaluation(reason: str) -> RecordDict:
    """An evaluate reply for a run outside the site's limits (site_app.site_limits): nothing was validated."""
    return RecordDict({"validation": ConfigRecord({"status": REFUSED, REASON_KEY: reason})})
