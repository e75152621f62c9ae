"""The wire contract: every name that crosses between a site's ClientApp and the coordinator's ServerApp; one job: the contract.

Both sides import these names; a string spelled here is spelled nowhere else. The messages (content records
by name, see Record):

    train           instruction  ARRAYS (global model) + CONFIG {server-round, run-key[, proximal-mu]}
                    reply        ARRAYS (the site's weights) + METRICS {train-loss, num-examples}, or, when
                                 the site's policy stops it, only TRAINING {status declined|refused, reason,
                                 min-train-cases | OutsideLimit}
    evaluate        instruction  ARRAYS (global model) + CONFIG {server-round, run-key}
                    reply        VALIDATION {status, min-report-cases, reason, withheld, conventions} (refused:
                                 {status, reason, OutsideLimit}) and, only when the status is "reported",
                                 METRICS (aggregates in the key grammar below, with the local-only baseline's
                                 keys when the run has `local-baseline`, the personalized model's with
                                 `personalize-epochs`, num-examples)

    train, one message per round (run config `round-messages` one; server_app.rounds.loop)
                    instruction  as train, its CONFIG also {evaluate-round}: the global model it carries is the one
                                 that round ended with; the site validates it first, exactly as an evaluate
                                 instruction of that round, then trains on it
                    reply        the train reply's records + the evaluate reply's VALIDATION and, reported, its
                                 METRICS under VALIDATION_METRICS (models.shared.round_reply fuses and splits);
                                 a validation that raised is VALIDATION {status failed, reason: the error's type
                                 only}, and the training still replies

    train, with `secure-aggregation` (SecAgg+; server_app.rounds.secure_aggregation, site_app.update_masking):
                    four train messages per round, each with a SECAGG record {stage, …}: setup (→ the site's two
                    public keys), share-keys (the neighbours' keys → encrypted key shares), collect-masked-vectors
                    (the train instruction above + SECURE {update-norm-bound, max-weight} + the shares meant for
                    the site → METRICS {train-loss, num-examples} + SECAGG {masked vector}, no ARRAYS; or the
                    TRAINING record of a declined or refused round), unmask (→ the shares the coordinator needs)

ARRAYS travel in the run's `transport-dtype` (float16 or float32; models.transport) and, with `local-norm`,
without the normalization layers (models.norm_layers), in both directions, packed as one array with its layout
beside it (Packing, models.packed_weights): the names above are what each side reads after unpacking.
    query.describe  instruction  empty
                    reply        SITE {site-name, min-report-cases} + OVERVIEW (aggregate overview of the
                                 site's data)

    query.local_model
                    instruction  CONFIG {run-key}; sent once after the last round, only to a site whose describe
                                 reply said SITE_SHARES_LOCAL_MODEL
                    reply        ARRAYS (the site's local-only baseline model, whole, in the transport dtype), or
                                 only SHARING {status refused, reason} (no consent in the site's own settings, or
                                 no local-only model)
    query.cross_evaluate
                    instruction  ARRAYS (another consenting site's local-only model) + CONFIG {run-key}
                    reply        as an evaluate reply, without any key of a model kept at the site (refused
                                 without the site's consent)

A reply's status is a Status; a REFUSED one names the setting and the site's limit it breaks (OutsideLimit). A
deployed site's gate answers any instruction of a run whose app the site has not approved with an error reply
instead (Error code APP_NOT_APPROVED_CODE; no code of the app ran). Which site sent a reply is the coordinator's
to know, from the reply's node (server_app.rounds.site_directory), never from what the reply says.

Metric key grammar (kebab-case, like Flower's own `num-examples`), with a region from models.shared.labels:

    <metric>-<region>           a per-case value (kept at the site)             dice-wt
    <metric>-<region>-<stat>    an aggregate of a metric over a site's cases    dice-wt-mean, hd95-et-ci-low
    <count>-<region>            a count summed over a site's cases              lesions-fn-tc
    dice-mean[-ci-low|-ci-high] mean Dice over regions (and its CI)
    n-cases, n-skipped          the site's validated and skipped cases

No minimum, maximum or other single-case value is sent (site_app.disclosure.policy, R2); median and quartiles
(POSITION_STATS), n-skipped and the local-only baseline's keys may be withheld by a site (`withholdable`).

The coordinator pools exactly what pools from aggregates: every "-mean" (case-weighted) and every count
(summed), recognised by this grammar, so a metric or count added here is pooled without touching the coordinator.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from flwr.app import MessageType
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

# Message types ---------------------------------------------------------------------------------------------

DESCRIBE = "describe"
"""The describe query's action; the ClientApp registers its handler with `@app.query(DESCRIBE)`."""

DESCRIBE_MESSAGE_TYPE = f"{MessageType.QUERY}.{DESCRIBE}"
"""What the ServerApp sends ("query.describe"); Flower routes it to the ClientApp's DESCRIBE handler."""

LOCAL_MODEL = "local_model"
"""The query asking a consenting site for its local-only baseline model (the cross-site matrix)."""
LOCAL_MODEL_MESSAGE_TYPE = f"{MessageType.QUERY}.{LOCAL_MODEL}"
CROSS_EVALUATE = "cross_evaluate"
"""The query asking a consenting site to validate another consenting site's local-only model."""
CROSS_EVALUATE_MESSAGE_TYPE = f"{MessageType.QUERY}.{CROSS_EVALUATE}"


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
    TRAINING = "training"
    """ConfigRecord of a train reply that carries no weights: status DECLINED or REFUSED (Training)."""
    SITE = "site"
    """ConfigRecord of a describe reply: SITE_NAME and SITE_MIN_REPORT_CASES."""
    OVERVIEW = "overview"
    """MetricRecord of a describe reply: the site's data overview (Overview)."""
    SHARING = "sharing"
    """ConfigRecord of a local-model reply that carries no model: {status: refused, reason}."""
    VALIDATION_METRICS = "validation-metrics"
    """MetricRecord of a train reply that also validated (EVALUATE_ROUND): the evaluate reply's METRICS."""
    SECAGG = RECORD_KEY_CONFIGS
    """ConfigRecord of every message of a secure-aggregation round (Flower's SecAgg+ record, its keys Flower's
    secaggplus_constants.Key): the stage and its data, both ways; a masked train reply's masked vector."""
    SECURE = "secure-aggregation"
    """ConfigRecord of a secure-aggregation train instruction: how the site prepares its update (SecureUpdate)."""


class Packing:
    """How a message's ArrayRecords travel (models.packed_weights): each with two or more arrays as one byte
    array under PACKED_ARRAY, its layout in the ConfigRecord named after it + LAYOUT_SUFFIX."""

    PACKED_ARRAY = "packed"
    """The one array of a packed ArrayRecord: every array's bytes, in the layout's order (uint8)."""
    LAYOUT_SUFFIX = ".layout"
    """Suffix of the ConfigRecord beside a packed ArrayRecord (e.g. "arrays.layout")."""
    LAYOUT = "layout"
    """In that ConfigRecord: JSON list of [name, dtype, shape] per array, in order."""


SERVER_ROUND = "server-round"
"""The round in an instruction's CONFIG record (set by Flower's FedAvg; 0: validating the initial model)."""

EVALUATE_ROUND = "evaluate-round"
"""In a train instruction's CONFIG when a round needs one message per site: the round whose validation rides on
it (the previous one; 0: the initial model). The site validates the model the instruction carries as that round's
evaluate instruction would have it validated, then trains on it."""

NUM_EXAMPLES = "num-examples"
"""In every METRICS reply: training cases (train) or validated cases (evaluate); FedAvg weights by it."""

TRAIN_LOSS = "train-loss"
"""In a train reply: the mean loss over the round's local steps."""

SITE_NAME = "site-name"
"""In a describe reply's SITE record: the name the site calls itself. A deployed site is filed under the name the
coordinator registered its key under whatever it says; only a simulated one is filed under this."""

RUN_KEY = "run-key"
"""In every train and evaluate instruction's CONFIG: which run this is, the same for every round and for a resumed
run (the coordinator derives it from its run folder). A site keeps its run state (local-norm layers, local-only
baseline model) under <work>/runs/<run key>/ (site_app.learning.run_state)."""
RUN_KEY_PATTERN = r"[0-9a-f]{16}"
"""A run key: 16 lowercase hex digits (the start of a SHA-256), safe as a folder name."""

PROXIMAL_MU = "proximal-mu"
"""In a train instruction's CONFIG with strategy fedprox (set by Flower's FedProx): the weight μ of the proximal
term the site adds to its loss."""
LR_SCALE = "lr-scale"
"""In a train instruction's CONFIG: the share in (0, 1] of the site's own learning rate this round trains with
(the coordinator's `lr-schedule`); a site never trains faster than its own setting."""
SITE_MIN_REPORT_CASES = "min-report-cases"
"""In a describe reply's SITE record: the site's min-report-cases k. Its OVERVIEW withholds a case count between 1
and k - 1 (site_app.disclosure.policy, R8); the coordinator then bounds the site's `num-examples` by k - 1."""

SITE_SHARES_LOCAL_MODEL = "share-local-model-for-evaluation"
"""In a describe reply's SITE record: whether the site consents to share its local-only model for evaluation at the
other consenting sites (its own setting; the coordinator asks only such sites, and the site checks again)."""


# Statuses ---------------------------------------------------------------------------------------------------


class Status(StrEnum):
    """A site's part in a phase, in one word. The first four cross the wire in the STATUS field of a reply's
    VALIDATION or TRAINING record (the site's own decision); the coordinator files the others in metrics.jsonl
    (server_app.rounds.participation) so that every site has one record per round."""

    REPORTED = "reported"
    """Evaluate: the site sent aggregates (METRICS record present)."""
    SUPPRESSED = "suppressed"
    """Evaluate: the site's disclosure policy let no number about its validation cases leave (no METRICS record):
    fewer cases than its minimum, or a set too close to the one it last reported."""
    REFUSED = "refused"
    """Train or evaluate: a run setting is outside the site's limits (the record's OutsideLimit fields say which);
    nothing was computed (no METRICS, no ARRAYS)."""
    DECLINED = "declined"
    """Train: the site has fewer training cases than its `min-train-cases`; no weights, loss or count."""
    OFFLINE = "offline"
    """Coordinator: not online when the phase started, or lost during it (Flower's "node unavailable")."""
    TIMEOUT = "timeout"
    """Coordinator: no reply by the phase's deadline (train-timeout-s, evaluate-timeout-s, describe-timeout-s)."""
    FAILED = "failed"
    """Coordinator: the site replied with an error (only the error's type leaves a site: error_details), or its
    gate refused the run's app (APP_NOT_APPROVED_CODE)."""
    DROPPED = "dropped"
    """Coordinator: the reply failed its checks (server_app.rounds.reply_checks); the reason names the check."""
    TOOK_PART = "ok"
    """Coordinator: the reply arrived, passed the checks and carries what was asked."""
    NOT_ASKED = "not-asked"
    """Coordinator: the phase did not involve the site (round 0 has no training)."""


EVALUATE_STATUSES = (Status.REPORTED, Status.SUPPRESSED, Status.REFUSED)
"""The statuses of an evaluate reply's VALIDATION record."""
WITHOUT_NUMBERS = (Status.SUPPRESSED, Status.REFUSED)
"""Evaluate statuses whose reply carries no METRICS record."""
TRAINING_STATUSES = (Status.DECLINED, Status.REFUSED)
"""The statuses of a train reply's TRAINING record (a train reply with weights has none)."""
ABSENT_STATUSES = (Status.OFFLINE, Status.TIMEOUT, Status.FAILED, Status.DROPPED)
"""A missing or unusable reply, not a policy decision of the site (SUPPRESSED, REFUSED, DECLINED)."""


def read_status(value: object, allowed: Iterable[Status]) -> Status | None:
    """The status a reply's STATUS field holds when it is one of `allowed`; None for anything else."""
    return Status(value) if isinstance(value, str) and value in tuple(allowed) else None


class Validation:
    """Keys of an evaluate reply's VALIDATION record; all but STATUS, MIN_REPORT_CASES, REASON and WITHHELD are
    conventions."""

    STATUS = "status"
    MIN_REPORT_CASES = "min-report-cases"
    REASON = "reason"
    """Unless reported: one sentence naming the rule (suppressed) or the setting and limit (refused)."""
    WITHHELD = "withheld"
    """Of a reported reply: the statistics the site's policy left out, with the rule ("median (n < 10)")."""
    EVAL_REGIONS = "eval-regions"
    REGIONS = "regions"
    """Region names, in order (models.shared.labels)."""
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
    # The site's disclosure policy (site_app.disclosure.policy): POLICY_CONVENTIONS
    MIN_POSITION_CASES = "min-position-cases"
    MIN_TRAIN_CASES = "min-train-cases"
    POSITION_ESTIMATOR = "position-estimator"
    RELEASE_DECIMALS = "release-decimals"
    VALIDATION_SET = "validation-set"
    DISCLOSURE_POLICY = "disclosure-policy"
    MIN_LESION_MM3 = "min-lesion-mm3"  # the site's own post-processing: smaller predicted components removed


POLICY_CONVENTIONS = (
    Validation.MIN_POSITION_CASES,
    Validation.MIN_TRAIN_CASES,
    Validation.POSITION_ESTIMATOR,
    Validation.RELEASE_DECIMALS,
    Validation.BOOTSTRAP_SEED,
    Validation.VALIDATION_SET,
    Validation.DISCLOSURE_POLICY,
    Validation.MIN_LESION_MM3,
)
"""Conventions of a VALIDATION record that state the site's disclosure policy, not how a metric is computed:
sites that differ in them report comparable numbers."""


class Training:
    """Keys of a train reply's TRAINING record (sent instead of weights when the site's policy stops a round)."""

    STATUS = "status"
    """DECLINED or REFUSED."""
    REASON = "reason"
    """One sentence naming the rule (declined) or the setting and limit (refused); no case data."""
    MIN_TRAIN_CASES = "min-train-cases"
    """Of a declined reply: the site's minimum."""


class SecureUpdate:
    """Keys of a secure-aggregation train instruction's SECURE record: what the site does to its update (its
    weights minus the global weights) before masking it."""

    NORM_BOUND = "update-norm-bound"
    """The L2 norm the site clips its update's float arrays to (the run's update-norm-bound)."""
    MAX_WEIGHT = "max-weight"
    """The most the site's update may weigh in the mean (its capped case count): it weighs min(its training cases,
    this)."""


class Overview:
    """Keys of a describe reply's OVERVIEW record (data_prep.inventory.site_aggregate; the site sends each count
    only when it is 0 or at least its min-report-cases, and no ranges: site_app.disclosure.policy, R2 and R8)."""

    N_CASES_USABLE = "n-cases-usable"
    N_CASES_EXCLUDED = "n-cases-excluded"


# Metric key grammar -----------------------------------------------------------------------------------------

METRICS = ("dice", "hd95", "nsd", "avd", "sensitivity", "precision")
"""Per-case metrics, summarised over a site's cases by every stat in STATS."""

COUNTS = ("empty-both", "empty-pred", "empty-truth", "lesions-tp", "lesions-fp", "lesions-fn")
"""Per-case counts, summed over a site's cases (and over sites when pooled)."""

STATS = ("mean", "median", "q1", "q3", "ci-low", "ci-high")
"""How a metric is summarised over a site's cases; only "mean" pools exactly over sites."""
POSITION_STATS = ("median", "q1", "q3")
"""The stats a site sends only from its min-position-cases on (site_app.disclosure.policy, R3)."""

POOLED_STAT = "mean"

N_CASES = "n-cases"
N_SKIPPED = "n-skipped"
SITE_COUNTS = (N_CASES, N_SKIPPED)
"""Counts about the site's validation as a whole (no region)."""

MEAN_DICE = "dice-mean"
"""Mean over a site's cases of the mean Dice over regions; the coordinator selects the best model by it."""
MEAN_DICE_CI_LOW = "dice-mean-ci-low"
MEAN_DICE_CI_HIGH = "dice-mean-ci-high"


# The local-only baseline (run setting `local-baseline`): more keys of a reported evaluate reply, never pooled.
# Per region r and metric m in BASELINE_METRICS: local-{m}-{r}-{stat} for the site's local-only model and
# gain-{m}-{r}-{stat} for the paired difference global − local-only on the same cases (paired bootstrap CI), plus
# the same of the mean Dice over regions (local-dice-mean…, gain-dice-mean…). A positive Dice gain (a negative HD95
# gain) means the federation's model did better on the site's cases.

LOCAL_ONLY_PREFIX = "local-"
GAIN_PREFIX = "gain-"
BASELINE_METRICS = ("dice", "hd95")
BASELINE_STATS = ("mean", "ci-low", "ci-high")
"""Only means and their CIs: no position statistic, no count (the counts are those of the global model's reply)."""

# The personalized model (run setting `personalize-epochs`): the global model fine-tuned on the site's own training
# cases, kept at the site. The same keys as the baseline's: personalized-{m}-{r}-{stat} for the personalized model
# and personalization-gain-{m}-{r}-{stat} for the paired difference personalized − global on the same cases.

PERSONALIZED_PREFIX = "personalized-"
PERSONALIZATION_GAIN_PREFIX = "personalization-gain-"
PERSONALIZED_OVER_LOCAL_PREFIX = "personalized-over-local-"
"""With both a local-only and a personalized model: the paired difference personalized − local-only on the same
cases (means and paired CIs), what a site gets from joining the federation when it personalizes."""
SITE_MODEL_PREFIXES = (LOCAL_ONLY_PREFIX, GAIN_PREFIX, PERSONALIZED_PREFIX, PERSONALIZATION_GAIN_PREFIX)
"""The keys of models that never leave a site (local-only, personalized): withholdable, never pooled."""


def baseline_key(prefix: str, metric: str, region: str | None, stat: str) -> str:
    """baseline_key(GAIN_PREFIX, "dice", "wt", "ci-low") → "gain-dice-wt-ci-low"; region None: the mean over
    regions, named like the site's own "dice-mean" / "dice-mean-ci-low" → "gain-dice-mean-ci-low"."""
    if region:
        return f"{prefix}{stat_key(metric, region, stat)}"
    return f"{prefix}{metric}-mean" if stat == "mean" else f"{prefix}{metric}-mean-{stat}"


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


def withholdable(key: str) -> bool:
    """Whether a site's disclosure policy may leave this key out of an otherwise reported evaluate reply: a
    position stat (below min-position-cases), n-skipped (between 1 and min-report-cases - 1), or a key of a
    model kept at the site (a site with no local-only or personalized model yet)."""
    if key == N_SKIPPED or key.startswith(SITE_MODEL_PREFIXES):
        return True
    parsed = parse_key(key)
    return parsed is not None and parsed.stat in POSITION_STATS


def regions_in(keys: Iterable[str]) -> list[str]:
    """The regions that metric keys name, in the order they first appear."""
    found: dict[str, None] = {}
    for key in keys:
        parsed = parse_key(key)
        if parsed is not None:
            found.setdefault(parsed.region)
    return list(found)


# Refusals ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutsideLimit:
    """Why a site refused a run, typed: run setting `setting` (its key, "batch-size") = `value` is beyond the
    site's limit `limit` (its node-config key, "limits.batch-size-max") = `bound`. A REFUSED reply's TRAINING or
    VALIDATION record carries these fields under KEYS; the REASON beside them is for people."""

    setting: str
    value: int | float
    limit: str
    bound: int | float

    KEYS: ClassVar[tuple[str, str, str, str]] = ("setting", "value", "limit", "bound")
    """The record keys of the fields, in field order."""

    def fields(self) -> dict[str, str | int | float]:
        return dict(zip(self.KEYS, (self.setting, self.value, self.limit, self.bound), strict=True))

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> "OutsideLimit | None":
        """The typed refusal in a TRAINING or VALIDATION record; None when a field is missing or of another type."""
        setting, value, limit, bound = (record.get(key) for key in cls.KEYS)
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (value, bound))
        texts = all(isinstance(v, str) and v for v in (setting, limit))
        return cls(setting, value, limit, bound) if numbers and texts else None


# A site's code-approval gate (deploy/site/approval_gate.py) runs a ClientApp only when the FAB's SHA-256 is on the
# site's own allow-list, and answers any other task with a Flower Error reply instead of launching it. An Error
# carries only a code and a reason: the code is the type; which site refused comes from the reply's node (the
# coordinator's registry), and which app from the run the coordinator started, never from the reason's text.

APP_NOT_APPROVED_CODE = 7
"""Error code of a refusal reply: Flower's ErrorCode.INVALID_FAB (the SuperNode's own "FAB could not be
verified" reply uses it too)."""

APP_NOT_APPROVED = "app not approved by the site"
"""The fixed start of every refusal reason."""


def refusal_reason(fab_hash: str) -> str:
    """The Error reason a site's gate sends: for people reading the coordinator's log (no path, no case)."""
    return (
        f"{APP_NOT_APPROVED}: FAB sha256 {fab_hash or '(none)'} is not on the site's allow-list (the site "
        "approves an app with `oncofed site approve`)"
    )


def is_app_refusal(code: int) -> bool:
    """Whether an Error reply's code says a site's gate refused the run's app."""
    return code == APP_NOT_APPROVED_CODE
