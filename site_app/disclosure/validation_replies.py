"""What a site discloses about its validation: aggregates under the disclosure policy, or nothing at all.

The rules, their sources and their thresholds are in site_app.disclosure.policy; this module builds the evaluate
reply from them. The minimum (node config `min-report-cases`, default DEFAULT_MIN_REPORT_CASES in
models.shared.node_config) is the site's own setting in deployment, which the coordinator's run config cannot
lower. A simulation has no node config (all sites are the operator's own data on one machine): there the run
setting `sim-min-report-cases` sets it.

The evaluate reply holds one ConfigRecord wire.Record.VALIDATION (status reported or suppressed, the site's
minimum, a reason unless reported, the statistics the policy withheld, and the metric conventions), and, only
when reported, one MetricRecord wire.Record.METRICS with the aggregates and `num-examples` (and, with the run
setting `local-baseline`, the local-only baseline's aggregates: site_app.learning.local_baseline; with
`personalize-epochs`, the personalized model's: site_app.learning.personalize). A refused
evaluation is site_app.disclosure.refusals'.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version

from flwr.app import ConfigRecord, MetricRecord, RecordDict

from models.shared.labels import evaluation_regions
from models.shared.wire import (
    COUNTS,
    GAIN_PREFIX,
    LOCAL_ONLY_PREFIX,
    METRICS,
    N_SKIPPED,
    NUM_EXAMPLES,
    PERSONALIZATION_GAIN_PREFIX,
    PERSONALIZED_OVER_LOCAL_PREFIX,
    PERSONALIZED_PREFIX,
    POSITION_STATS,
    Record,
    Status,
    Validation,
)
from site_app.disclosure.aggregates import BOOTSTRAP_RESAMPLES, CI_LEVEL, site_aggregates
from site_app.disclosure.policy import DisclosurePolicy, policy_conventions, released_count
from site_app.learning.local_baseline import paired_aggregates
from site_app.learning.metrics import HD95_PENALTY_MM, NSD_TOLERANCE_MM, metric_settings
from site_app.learning.validation import CaseEvaluation
from site_app.settings.run_settings import SiteRunSettings

LOCAL_ONLY_BASELINE = "local-only baseline"
PERSONALIZED_MODEL = "personalized model"
"""How a withheld model kept at the site is named in the reply's `withheld` list."""


@dataclass(frozen=True)
class KeptModel:
    """A model that never leaves the site (local-only baseline, personalized model): its results on the released
    cases, or None with the reason there are none; its keys' prefixes and whose gain the second one measures."""

    results: Sequence[CaseEvaluation] | None
    missing: str
    name: str
    prefixes: tuple[str, str]
    site_gain: bool

    @classmethod
    def local_only(
        cls,
        results: Sequence[CaseEvaluation] | None,
        missing: str = "no local-only model: this site has not trained in this run yet",
    ) -> "KeptModel":
        """The local-only baseline: gain-… is global − local-only."""
        return cls(results, missing, LOCAL_ONLY_BASELINE, (LOCAL_ONLY_PREFIX, GAIN_PREFIX), site_gain=False)

    @classmethod
    def personalized(cls, results: Sequence[CaseEvaluation] | None, missing: str = "") -> "KeptModel":
        """The personalized model: personalization-gain-… is personalized − global."""
        prefixes = (PERSONALIZED_PREFIX, PERSONALIZATION_GAIN_PREFIX)
        return cls(results, missing, PERSONALIZED_MODEL, prefixes, site_gain=True)


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
    def for_site(cls, settings: SiteRunSettings, node_config: Mapping[str, object]) -> "ValidationPolicy":
        return cls(
            regions=evaluation_regions(settings.eval_regions),
            region_set=settings.eval_regions,
            disclosure=DisclosurePolicy.for_site(node_config, settings),
        )


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
        **policy_conventions(policy.disclosure),
        Validation.SETTINGS: [f"{name}: {text}" for name, text in metric_settings().items()],
        Validation.SOFTWARE: [
            f"{name} {version(name)}" for name in ("oncofed", "monai", "torch", "numpy", "scipy")
        ],
    }


def evaluation_content(
    results: Sequence[CaseEvaluation],
    n_skipped: int,
    policy: ValidationPolicy,
    bootstrap_seed: int,
    kept: Sequence[KeptModel] = (),
) -> RecordDict:
    """The evaluate reply's content: aggregates when the site has at least its minimum of cases, else none.

    `results` are the cases of a releasable set (validation_split.released_set); `bootstrap_seed` comes from
    disclosure_policy.bootstrap_seed and is not sent. `kept`: models kept at the site (the local-only baseline, the
    personalized model); each one's results on the same cases add its means and CIs and those of the paired
    difference, under the same rules and with the same resamples (site_app.learning.local_baseline), or are
    withheld with the reason.
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
        withheld.append(f"{N_SKIPPED} (between 1 and {k - 1})")
    for model in kept:
        try:
            if model.results is None:
                raise ValueError(model.missing)
            aggregates.update(
                paired_aggregates(
                    results,
                    model.results,
                    list(policy.regions),
                    bootstrap_seed,
                    model.prefixes,
                    model.site_gain,
                )
            )
        except ValueError as error:
            withheld.append(f"{model.name} ({error})")
    aggregates.update(_personalized_over_local(results, kept, list(policy.regions), bootstrap_seed))
    metrics = MetricRecord(
        {**aggregates, **({} if skipped is None else {N_SKIPPED: skipped}), NUM_EXAMPLES: len(results)}
    )
    validation = {
        **conventions(policy),
        Validation.MIN_REPORT_CASES: k,
        Validation.STATUS: Status.REPORTED,
        Validation.WITHHELD: withheld,
    }
    return RecordDict({Record.VALIDATION: ConfigRecord(validation), Record.METRICS: metrics})


def _personalized_over_local(
    results: Sequence[CaseEvaluation], kept: Sequence[KeptModel], regions: list[str], bootstrap_seed: int
) -> dict[str, float]:
    """personalized-over-local-… (personalized − local-only, paired on the released cases, same resamples) when
    both models have results on exactly those cases; else nothing (each model's own keys say why)."""
    by_name = {model.name: model.results for model in kept}
    local, personalized = by_name.get(LOCAL_ONLY_BASELINE), by_name.get(PERSONALIZED_MODEL)
    released = {r.case_id for r in results}
    if local is None or personalized is None or {r.case_id for r in local} != released:
        return {}
    if {r.case_id for r in personalized} != released:
        return {}
    prefixes = (LOCAL_ONLY_PREFIX, PERSONALIZED_OVER_LOCAL_PREFIX)
    values = paired_aggregates(personalized, local, regions, bootstrap_seed, prefixes, site_gain=False)
    return {k: v for k, v in values.items() if k.startswith(PERSONALIZED_OVER_LOCAL_PREFIX)}


def suppressed_content(policy: ValidationPolicy, reason: str) -> RecordDict:
    """An evaluate reply with no number about the cases: the site's minimum, the reason, the conventions."""
    validation = {
        **conventions(policy),
        Validation.MIN_REPORT_CASES: policy.min_report_cases,
        Validation.REASON: reason,
        Validation.STATUS: Status.SUPPRESSED,
    }
    return RecordDict({Record.VALIDATION: ConfigRecord(validation)})
