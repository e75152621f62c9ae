"""What a site discloses about its validation: aggregates, or nothing at all below its minimum case count.

The minimum (`min-report-cases`, default 5) is the site's own setting: its node config in deployment, which the
coordinator's run config cannot lower. A simulation has no node config (all sites are the operator's own data on
one machine): there the run config's `sim-min-report-cases` sets it, default 1.

The evaluate reply holds one ConfigRecord "validation" (status "reported" or "suppressed", the site's minimum,
and the metric conventions), and, only when reported, one MetricRecord "metrics" with the aggregates and
`num-examples`.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version

from flwr.app import ConfigRecord, Context, MetricRecord, RecordDict

from site_app.aggregates import BOOTSTRAP_RESAMPLES, CI_LEVEL, site_aggregates
from site_app.local_baseline import baseline_aggregates
from site_app.metrics import (
    COUNTS,
    HD95_PENALTY_MM,
    METRICS,
    NSD_TOLERANCE_MM,
    evaluation_regions,
    metric_settings,
)
from site_app.validation import CaseEvaluation

DEFAULT_MIN_REPORT_CASES = 5
SIMULATION_MIN_REPORT_CASES = 1
REPORTED, SUPPRESSED = "reported", "suppressed"


@dataclass(frozen=True)
class ValidationPolicy:
    """How this site validates and what it discloses: regions, its minimum case count, the bootstrap seed."""

    regions: Mapping[str, tuple[int, ...]]
    region_set: str
    min_report_cases: int
    seed: int

    @classmethod
    def from_context(cls, context: Context) -> "ValidationPolicy":
        region_set = str(context.run_config.get("eval-regions", "brats"))
        return cls(
            regions=evaluation_regions(region_set),
            region_set=region_set,
            min_report_cases=min_report_cases(context.node_config, context.run_config),
            seed=int(context.run_config["seed"]),
        )


def min_report_cases(node_config: Mapping[str, object], run_config: Mapping[str, object]) -> int:
    """The site's minimum number of validation cases for any number to leave it (see the module docstring)."""
    if "data-path" in node_config:  # deployment: the site's own setting only
        value, source = node_config.get("min-report-cases", DEFAULT_MIN_REPORT_CASES), "node config"
    else:
        value, source = run_config.get("sim-min-report-cases", SIMULATION_MIN_REPORT_CASES), "run config"
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{source} `min-report-cases` must be a whole number of at least 1, got {value!r}")
    return value


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
        "bootstrap-seed": policy.seed,
        "settings": [f"{name}: {text}" for name, text in metric_settings().items()],
        "software": [f"{name} {version(name)}" for name in ("oncofed", "monai", "torch", "numpy", "scipy")],
    }


def evaluation_content(
    results: Sequence[CaseEvaluation],
    n_skipped: int,
    policy: ValidationPolicy,
    baseline: Sequence[CaseEvaluation] | None = None,
) -> RecordDict:
    """The evaluate reply's content: aggregates when the site has at least its minimum of cases, else none.

    `baseline`: the local-only model's results on the same cases (run config `local-baseline`); its aggregates
    and those of the paired difference are added under the same rule (site_app.local_baseline)."""
    validation = {**conventions(policy), "min-report-cases": policy.min_report_cases}
    if len(results) < policy.min_report_cases:
        return RecordDict({"validation": ConfigRecord({**validation, "status": SUPPRESSED})})
    aggregates = site_aggregates(
        [r.metrics for r in results], [r.spacing_mm for r in results], list(policy.regions), policy.seed
    )
    if baseline is not None:
        aggregates.update(baseline_aggregates(results, baseline, list(policy.regions), policy.seed))
    metrics = MetricRecord({**aggregates, "n-skipped": n_skipped, "num-examples": len(results)})
    return RecordDict({"validation": ConfigRecord({**validation, "status": REPORTED}), "metrics": metrics})
