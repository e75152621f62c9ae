"""The wire contract: every name that crosses between a site's ClientApp and the coordinator's ServerApp.

Both sides import these names; a string spelled here is spelled nowhere else. The messages (content records
by name, see Record):

    train           instruction  ARRAYS (global model) + CONFIG {server-round}
                    reply        ARRAYS (the site's weights) + METRICS {train-loss, num-examples}
    evaluate        instruction  ARRAYS (global model) + CONFIG {server-round}
                    reply        VALIDATION {status, min-report-cases, conventions} and, only when the status
                                 is "reported", METRICS (aggregates in the key grammar below, num-examples)
    query.describe  instruction  empty
                    reply        SITE {site-name} + OVERVIEW (aggregate overview of the site's data)

Metric key grammar (kebab-case, like Flower's own `num-examples`), with a region from models.labels:

    <metric>-<region>           a per-case value (kept at the site)             dice-wt
    <metric>-<region>-<stat>    an aggregate of a metric over a site's cases    dice-wt-mean, hd95-et-ci-low
    <count>-<region>            a count summed over a site's cases              lesions-fn-tc
    dice-mean[-ci-low|-ci-high] mean Dice over regions (and its CI)
    n-cases, n-skipped          the site's validated and skipped cases
    spacing-min-mm, spacing-max-mm

The coordinator pools exactly what pools from aggregates: every "-mean" (case-weighted) and every count
(summed), recognised by this grammar, so a metric or count added here is pooled without touching the coordinator.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from flwr.app import MessageType

# Message types ---------------------------------------------------------------------------------------------

DESCRIBE = "describe"
"""The describe query's action; the ClientApp registers its handler with `@app.query(DESCRIBE)`."""

DESCRIBE_MESSAGE_TYPE = f"{MessageType.QUERY}.{DESCRIBE}"
"""What the ServerApp sends ("query.describe"); Flower routes it to the ClientApp's DESCRIBE handler."""


# Records and their keys ------------------------------------------------------------------------------------


class Record:
    """Names of the records in a message's content (RecordDict)."""

    ARRAYS = "arrays"
    """ArrayRecord: the global model (instructions) or the site's trained weights (train reply)."""
    CONFIG = "config"
    """ConfigRecord of every instruction (FedAvg's `configrecord_key`): holds SERVER_ROUND."""
    METRICS = "metrics"
    """MetricRecord of a train reply (train-loss) or of a reported evaluate reply (aggregates)."""
    VALIDATION = "validation"
    """ConfigRecord of every evaluate reply: status, the site's minimum, metric conventions (Validation)."""
    SITE = "site"
    """ConfigRecord of a describe reply: SITE_NAME."""
    OVERVIEW = "overview"
    """MetricRecord of a describe reply: the site's data overview (Overview)."""


SERVER_ROUND = "server-round"
"""The round in an instruction's CONFIG record (set by Flower's FedAvg; 0: validating the initial model)."""

NUM_EXAMPLES = "num-examples"
"""In every METRICS reply: training cases (train) or validated cases (evaluate); FedAvg weights by it."""

TRAIN_LOSS = "train-loss"
"""In a train reply: the mean loss over the round's local steps."""

SITE_NAME = "site-name"
"""In a describe reply's SITE record: the name the site's results are filed under."""


# Statuses of an evaluate reply ------------------------------------------------------------------------------

REPORTED = "reported"
"""The site sent aggregates (METRICS record present)."""
SUPPRESSED = "suppressed"
"""The site had fewer validation cases than its minimum and sent no number about them (no METRICS record)."""
STATUSES = (REPORTED, SUPPRESSED)


class Validation:
    """Keys of an evaluate reply's VALIDATION record; all but STATUS and MIN_REPORT_CASES are conventions."""

    STATUS = "status"
    MIN_REPORT_CASES = "min-report-cases"
    EVAL_REGIONS = "eval-regions"
    REGIONS = "regions"
    """Region names, in order (models.labels)."""
    REGION_LABELS = "region-labels"
    """For each region, its label values joined by "+" ("1+2+3")."""
    METRICS = "metrics"
    COUNTS = "counts"
    HD95_PENALTY_MM = "hd95-penalty-mm"
    NSD_TOLERANCE_MM = "nsd-tolerance-mm"
    CI_LEVEL = "ci-level"
    BOOTSTRAP_RESAMPLES = "bootstrap-resamples"
    BOOTSTRAP_SEED = "bootstrap-seed"
    SETTINGS = "settings"
    """The exact metric calls, as text lines for the reports."""
    SOFTWARE = "software"
    """The site's software, one "<package> <version>" per entry."""


class Overview:
    """Keys of a describe reply's OVERVIEW record (written by data_prep.inventory.site_aggregate)."""

    N_CASES_USABLE = "n-cases-usable"
    N_CASES_EXCLUDED = "n-cases-excluded"
    SPACING_MIN_MM = "spacing-min-mm"
    SPACING_MAX_MM = "spacing-max-mm"
    SIZE_MIN_VOX = "size-min-vox"
    SIZE_MAX_VOX = "size-max-vox"


# Metric key grammar -----------------------------------------------------------------------------------------

METRICS = ("dice", "hd95", "nsd", "avd", "sensitivity", "precision")
"""Per-case metrics, summarised over a site's cases by every stat in STATS."""

COUNTS = ("empty-both", "empty-pred", "empty-truth", "lesions-tp", "lesions-fp", "lesions-fn")
"""Per-case counts, summed over a site's cases (and over sites when pooled)."""

STATS = ("mean", "median", "q1", "q3", "ci-low", "ci-high")
"""How a metric is summarised over a site's cases; only "mean" pools exactly over sites."""

POOLED_STAT = "mean"

N_CASES = "n-cases"
N_SKIPPED = "n-skipped"
SITE_COUNTS = (N_CASES, N_SKIPPED)
"""Counts about the site's validation as a whole (no region)."""

MEAN_DICE = "dice-mean"
"""Mean over a site's cases of the mean Dice over regions; the coordinator selects the best model by it."""
MEAN_DICE_CI_LOW = "dice-mean-ci-low"
MEAN_DICE_CI_HIGH = "dice-mean-ci-high"

SPACING_MIN_MM = "spacing-min-mm"
SPACING_MAX_MM = "spacing-max-mm"
"""The range of native voxel edges over a site's validated cases."""


@dataclass(frozen=True)
class MetricKey:
    """A parsed region key: `stat` is None for a per-case value or a count."""

    name: str
    region: str
    stat: str | None = None


def region_key(name: str, region: str) -> str:
    """A metric's per-case value or a count, for one region: "dice-wt", "lesions-fn-tc"."""
    return f"{name}-{region}"


def stat_key(metric: str, region: str, stat: str) -> str:
    """An aggregate of a metric over a site's cases: "dice-wt-mean", "hd95-et-ci-low"."""
    return f"{metric}-{region}-{stat}"


def parse_key(key: str) -> MetricKey | None:
    """The metric or count, region and stat of a region key; None for other keys (dice-mean, n-cases, ...)."""
    if key in (MEAN_DICE, MEAN_DICE_CI_LOW, MEAN_DICE_CI_HIGH):
        return None
    for name in sorted((*METRICS, *COUNTS), key=len, reverse=True):  # longest first: names hold "-"
        if not key.startswith(f"{name}-"):
            continue
        region, _, stat = key[len(name) + 1 :].partition("-")
        if not region:
            return None
        if not stat:
            return MetricKey(name, region)
        return MetricKey(name, region, stat) if name in METRICS and stat in STATS else None
    return None


def is_count(key: str) -> bool:
    """A count the coordinator sums over sites: n-cases, n-skipped or "<count>-<region>"."""
    if key in SITE_COUNTS:
        return True
    parsed = parse_key(key)
    return parsed is not None and parsed.name in COUNTS and parsed.stat is None


def is_pooled_mean(key: str) -> bool:
    """A mean the coordinator pools case-weighted over sites: dice-mean or "<metric>-<region>-mean"."""
    if key == MEAN_DICE:
        return True
    parsed = parse_key(key)
    return parsed is not None and parsed.stat == POOLED_STAT


def count_keys(regions: Iterable[str]) -> list[str]:
    """Every count key of a reported evaluation over these regions (all of them are pooled by summing)."""
    return [*SITE_COUNTS, *(region_key(count, region) for count in COUNTS for region in regions)]


def regions_in(keys: Iterable[str]) -> list[str]:
    """The regions that metric keys name, in the order they first appear."""
    found: dict[str, None] = {}
    for key in keys:
        parsed = parse_key(key)
        if parsed is not None:
            found.setdefault(parsed.region)
    return list(found)


# Node config: a deployed site's own settings (Flower's --node-config) --------------------------------------


class NodeConfig:
    """Keys of `context.node_config`. A deployed site's SuperNode is given the first four (from its
    site.toml); a simulated one gets Flower's partition keys instead."""

    SITE_NAME = SITE_NAME
    DATA_PATH = "data-path"
    """The site's data folder; only read."""
    WORK_PATH = "work-path"
    """A folder the site owns: cache, inventory, logs, site-local reports; not inside DATA_PATH."""
    MIN_REPORT_CASES = "min-report-cases"
    """The fewest validation cases for which the site sends any metric (DEFAULT_MIN_REPORT_CASES)."""
    PARTITION_ID = "partition-id"
    NUM_PARTITIONS = "num-partitions"
    """Set by Flower's Simulation Engine for each virtual node."""


DEPLOYED_NODE_CONFIG = (
    NodeConfig.SITE_NAME,
    NodeConfig.DATA_PATH,
    NodeConfig.WORK_PATH,
    NodeConfig.MIN_REPORT_CASES,
)
"""What a deployed site's launcher writes into its node config."""

DEFAULT_MIN_REPORT_CASES = 5
"""A deployed site's minimum when its node config does not set one."""
