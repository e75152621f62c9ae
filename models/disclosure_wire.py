"""Wire names of the site's disclosure policy and site limits, shared by the site and the coordinator.

Issue 10 adds these; models/wire.py (issue 14) is their final home: fold this module into it at merge.
The older statuses "reported" and "suppressed" are still defined in site_app/disclosure.py and
server_app/run_folder.py.
"""

REFUSED = "refused"
"""Status of a train or evaluate reply when a run setting is outside the site's limits: nothing was computed."""

DECLINED = "declined"
"""Status of a train reply when the site has fewer training cases than its `min-train-cases`: no weights."""

TRAINING_RECORD = "training"
"""ConfigRecord of a train reply that carries no weights: {STATUS_KEY, REASON_KEY, MIN_TRAIN_CASES}."""

STATUS_KEY = "status"
REASON_KEY = "reason"
"""One sentence naming the setting and the limit (refused) or the rule (declined, suppressed); no case data."""

# Node-config keys the site owns (site.toml top level in a kit). The coordinator's run config cannot set them;
# in a simulation (no node config) the run config's "sim-" + key sets them.
MIN_REPORT_CASES = "min-report-cases"
MIN_POSITION_CASES = "min-position-cases"
MIN_TRAIN_CASES = "min-train-cases"
VALIDATION_FRACTION = "validation-fraction"
POLICY_KEYS = (MIN_REPORT_CASES, MIN_POSITION_CASES, MIN_TRAIN_CASES, VALIDATION_FRACTION)

LIMITS_TABLE = "limits"
"""site.toml table of the site's limits on run settings; in the node config its keys are "limits.<key>"."""
LIMIT_KEYS = (
    "spacing-mm-min",
    "spacing-mm-max",
    "patch-size-max",
    "samples-per-case-max",
    "batch-size-max",
    "local-epochs-max",
    "max-resampled-voxels",
)

POLICY_CONVENTION_KEYS = (
    "min-position-cases",
    "min-train-cases",
    "position-estimator",
    "release-decimals",
    "bootstrap-seed",
    "validation-set",
    "disclosure-policy",
)
"""Keys of an evaluate reply's validation record that state the site's disclosure policy, not how a metric is
computed: sites that differ in them report comparable numbers."""

WITHHOLDABLE_SUFFIXES = ("-median", "-q1", "-q3")
"""Evaluate metric keys a site sends only from its min-position-cases on (position statistics)."""
WITHHOLDABLE_KEYS = ("n-skipped",)
"""Evaluate metric keys a site leaves out when the count is between 1 and its min-report-cases − 1."""


def withholdable(key: str) -> bool:
    """Whether a site's disclosure policy may leave this evaluate metric out of an otherwise reported reply."""
    return key in WITHHOLDABLE_KEYS or key.endswith(WITHHOLDABLE_SUFFIXES)
