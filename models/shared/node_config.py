"""A deployed site's own settings, as keys of Flower's node config (`flower-supernode --node-config`).

The site's launcher (deploy.site.launcher) writes them from the kit's site.toml; the ClientApp reads them
(site_app.settings). They never cross to the coordinator: the coordinator's run config cannot set them.
"""

from models.shared.wire import SITE_NAME, SITE_SHARES_LOCAL_MODEL


class NodeConfig:
    """Keys of `context.node_config`. A deployed site's SuperNode is given the site's keys (from its site.toml:
    the first five always, the other policy keys and limits when the site sets them); a simulated one gets
    Flower's partition keys instead, and its policy from the run config's "sim-" settings (models.shared.run_config)."""

    SITE_NAME = SITE_NAME
    DATA_PATH = "data-path"
    """The site's data folder; only read."""
    WORK_PATH = "work-path"
    """A folder the site owns: cache, inventory, logs, site-local reports; not inside DATA_PATH."""
    SITE_CONFIG = "site-config"
    """Absolute path of the site's site.toml: the ClientApp builds its inventory with its [series], [labels] and
    [limits] (site_app.settings.site_file), and rebuilds it when they change."""
    MIN_REPORT_CASES = "min-report-cases"
    """The fewest validation cases for which the site sends any metric (DEFAULT_MIN_REPORT_CASES)."""
    MIN_POSITION_CASES = "min-position-cases"
    """The fewest validation cases for which medians and quartiles are sent (DEFAULT_MIN_POSITION_CASES)."""
    MIN_TRAIN_CASES = "min-train-cases"
    """The fewest training cases the site trains on (DEFAULT_MIN_TRAIN_CASES)."""
    VALIDATION_FRACTION = "validation-fraction"
    """The share of its cases the site keeps for validation in its own split (DEFAULT_VALIDATION_FRACTION)."""
    MIN_LESION_MM3 = "min-lesion-mm3"
    """Validation post-processing: predicted tumor components smaller than this (mm³) are removed; the site's,
    so a coordinator cannot sweep it to move lesion counts one lesion at a time (DEFAULT_MIN_LESION_MM3)."""
    SHARE_LOCAL_MODEL = SITE_SHARES_LOCAL_MODEL
    """The site's consent (true/false, default DEFAULT_SHARE_LOCAL_MODEL) to send its local-only baseline model,
    once after the last round, for the other consenting sites to evaluate (the cross-site generalization matrix).
    Only the site's handler reads it: a coordinator cannot obtain the model without it."""
    LOCAL_DP_NOISE_MULTIPLIER = "local-dp-noise-multiplier"
    """Local differential privacy, the site's own: > 0 adds Gaussian noise σ = this × LOCAL_DP_CLIPPING_NORM to
    the site's clipped training update before it leaves (site_app.local_dp); 0 (default): off."""
    LOCAL_DP_CLIPPING_NORM = "local-dp-clipping-norm"
    """Local DP: the L2 norm the site clips its update to before adding noise (DEFAULT_LOCAL_DP_CLIPPING_NORM)."""
    LIMITS = "limits"
    """Prefix of the site's limits on run settings: "limits.<key>" for each key of LIMIT_KEYS (site.toml's
    [limits] table; site_app.settings.limits)."""
    PARTITION_ID = "partition-id"
    NUM_PARTITIONS = "num-partitions"
    """Set by Flower's Simulation Engine for each virtual node."""


POLICY_KEYS = (
    NodeConfig.MIN_REPORT_CASES,
    NodeConfig.MIN_POSITION_CASES,
    NodeConfig.MIN_TRAIN_CASES,
    NodeConfig.VALIDATION_FRACTION,
    NodeConfig.MIN_LESION_MM3,
)
"""The site's disclosure settings (site_app.disclosure.policy); the coordinator's run config cannot set them."""

CONSENT_KEYS = (NodeConfig.SHARE_LOCAL_MODEL,)
"""The site's consents (true/false) a site.toml may set; absent: off. The coordinator's run config cannot set them."""

PRIVACY_KEYS = (NodeConfig.LOCAL_DP_NOISE_MULTIPLIER, NodeConfig.LOCAL_DP_CLIPPING_NORM)
"""The site's own local DP (site_app.local_dp) a site.toml may set; absent: off. The coordinator's run config cannot
set them."""

DEPLOYED_NODE_CONFIG = (
    NodeConfig.SITE_NAME,
    NodeConfig.DATA_PATH,
    NodeConfig.WORK_PATH,
    NodeConfig.SITE_CONFIG,
    *POLICY_KEYS,
    *CONSENT_KEYS,
    *PRIVACY_KEYS,
)
"""What a deployed site's launcher writes into its node config from a kit's site.toml as shipped (a site.toml
without the optional policy keys leaves them out; each limit the site sets adds "limits.<key>")."""

LIMIT_KEYS = (
    "spacing-mm-min",
    "spacing-mm-max",
    "patch-size-max",
    "samples-per-case-max",
    "batch-size-max",
    "local-epochs-max",
    "max-resampled-voxels",
    "personalize-epochs-max",
    "batch-size-min",
    "samples-per-case-min",
    "local-steps-min",
    "max-evaluations-per-round",
    "max-evaluations-per-run",
)
"""The site's limits on run settings, as keys of site.toml's [limits] table (site_app.settings.limits)."""


def limit_key(key: str) -> str:
    """The node-config key of a limit: "limits.batch-size-max"."""
    return f"{NodeConfig.LIMITS}.{key}"


DEFAULT_LOCAL_DP_NOISE_MULTIPLIER = 0.0
DEFAULT_LOCAL_DP_CLIPPING_NORM = 1.0
LOCAL_DP_DELTA = 1e-5
"""The δ at which a site's local-DP ε is stated."""
DEFAULT_MIN_REPORT_CASES = 5
"""A deployed site's minimum when its node config does not set one."""
DEFAULT_SHARE_LOCAL_MODEL = False
"""A deployed site does not share its local-only model unless its node config (site.toml) says so."""
DEFAULT_MIN_POSITION_CASES = 10
DEFAULT_MIN_TRAIN_CASES = 5
DEFAULT_VALIDATION_FRACTION = 0.2
DEFAULT_MIN_LESION_MM3 = 0.0
"""A deployed site's other disclosure settings when its node config does not set them (a simulated site's
come from the "sim-" run settings, whose defaults are these but for sim-min-report-cases)."""
