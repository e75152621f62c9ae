"""What a site discloses about its validation: aggregates, or nothing at all below its minimum case count.

The minimum (node config `min-report-cases`, default wire.DEFAULT_MIN_REPORT_CASES) is the site's own setting in
deployment, which the coordinator's run config cannot lower. A simulation has no node config (all sites are the
operator's own data on one machine): there the run setting `sim-min-report-cases` sets it.

The evaluate reply holds one ConfigRecord wire.Record.VALIDATION (status reported or suppressed, the site's
minimum, and the metric conventions), and, only when reported, one MetricRecord wire.Record.METRICS with the
aggregates and `num-examples`.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version

from flwr.app import ConfigRecord, MetricRecord, RecordDict

from models.labels import evaluation_regions
from models.run_config import SIM_MIN_REPORT_CASES
from models.wire import (
    COUNTS,
    DEFAULT_MIN_REPORT_CASES,
    METRICS,
    N_SKIPPED,
    NUM_EXAMPLES,
    REPORTED,
    SUPPRESSED,
    NodeConfig,
    Record,
    Validation,
)
from site_app.aggregates import BOOTSTRAP_RESAMPLES, CI_LEVEL, site_aggregates
from site_app.metrics import HD95_PENALTY_MM, NSD_TOLERANCE_MM, metric_settings
from site_app.run_settings import SiteRunSettings
from site_app.validation import CaseEvaluation


@dataclass(frozen=True)
class ValidationPolicy:
    """How this site validates and what it discloses: regions, its minimum case count, the bootstrap seed."""

    regions: Mapping[str, tuple[int, ...]]
    region_set: str
    min_report_cases: int
    seed: int

    @classmethod
    def for_site(cls, settings: SiteRunSettings, node_config: Mapping[str, object]) -> "ValidationPolicy":
        return cls(
            regions=evaluation_regions(settings.eval_regions),
            region_set=settings.eval_regions,
            min_report_cases=min_report_cases(node_config, settings.sim_min_report_cases),
            seed=settings.seed,
        )


def min_report_cases(node_config: Mapping[str, object], simulated_minimum: int) -> int:
    """The site's minimum number of validation cases for any number to leave it (see the module docstring).

    A deployed site (node config with `data-path`) takes only its own node config's value; `simulated_minimum`
    (the run setting `sim-min-report-cases`) counts only in a simulation."""
    if NodeConfig.DATA_PATH in node_config:  # deployment: the site's own setting only
        value = node_config.get(NodeConfig.MIN_REPORT_CASES, DEFAULT_MIN_REPORT_CASES)
        setting = f"node config `{NodeConfig.MIN_REPORT_CASES}`"
    else:
        value, setting = simulated_minimum, f"run setting `{SIM_MIN_REPORT_CASES.key}`"
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{setting} must be a whole number of at least 1, got {value!r}")
    return value


def conventions(policy: ValidationPolicy) -> dict[str, str | int | float | list[str]]:
    """The metric definitions and settings this site used, for the coordinator's methods section."""
    return {
        Validation.EVAL_REGIONS: policy.region_set,
        Validation.REGIONS: list(policy.regions),
        Validation.REGION_LABELS: ["+".join(str(v) for v in values) for values in policy.regions.values()],
        Validation.METRICS: list(METRICS),
        Validation.COUNTS: list(COUNTS),
        Validation.HD95_PENALTY_MM: HD95_PENALTY_MM,
        Validation.NSD_TOLERANCE_MM: NSD_TOLERANCE_MM,
        Validation.CI_LEVEL: CI_LEVEL,
        Validation.BOOTSTRAP_RESAMPLES: BOOTSTRAP_RESAMPLES,
        Validation.BOOTSTRAP_SEED: policy.seed,
        Validation.SETTINGS: [f"{name}: {text}" for name, text in metric_settings().items()],
        Validation.SOFTWARE: [
            f"{name} {version(name)}" for name in ("oncofed", "monai", "torch", "numpy", "scipy")
        ],
    }


def evaluation_content(
    results: Sequence[CaseEvaluation], n_skipped: int, policy: ValidationPolicy
) -> RecordDict:
    """The evaluate reply's content: aggregates when the site has at least its minimum of cases, else none."""
    validation = {**conventions(policy), Validation.MIN_REPORT_CASES: policy.min_report_cases}
    if len(results) < policy.min_report_cases:
        return RecordDict({Record.VALIDATION: ConfigRecord({**validation, Validation.STATUS: SUPPRESSED})})
    aggregates = site_aggregates(
        [r.metrics for r in results], [r.spacing_mm for r in results], list(policy.regions), policy.seed
    )
    metrics = MetricRecord({**aggregates, N_SKIPPED: n_skipped, NUM_EXAMPLES: len(results)})
    return RecordDict(
        {
            Record.VALIDATION: ConfigRecord({**validation, Validation.STATUS: REPORTED}),
            Record.METRICS: metrics,
        }
    )
