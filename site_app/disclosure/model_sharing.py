"""Whether this site lets its local-only model leave, for the cross-site generalization matrix: its own consent.

The local-only baseline model (site_app.learning.local_baseline) is trained on this site's cases alone. A site that
consents (node config / site.toml `share-local-model-for-evaluation = true`; in a simulation, its name in the run
setting `sim-share-local-model-for-evaluation`) sends it once, after the last round, so that the other consenting
sites can validate it and send back aggregates only. The coordinator sees the model in transit. A site that does
not consent refuses the request whatever the coordinator sends, and takes no part in evaluating others' models.
"""

from collections.abc import Mapping

from flwr.app import ConfigRecord, RecordDict

from models.shared.node_config import DEFAULT_SHARE_LOCAL_MODEL, NodeConfig
from models.shared.wire import Record, Status, Validation
from site_app.disclosure.policy import deployed
from site_app.settings.run_settings import SiteRunSettings

NOT_CONSENTED = (
    f"this site does not share its local-only model (its setting `{NodeConfig.SHARE_LOCAL_MODEL}` is off)"
)


def shares_local_model(node_config: Mapping[str, object], settings: SiteRunSettings, site_name: str) -> bool:
    """The site's consent: a deployed site's node config (a true/false value; default off), a simulated site's
    name in the run's `sim-share-local-model-for-evaluation` list."""
    if deployed(node_config):
        value = node_config.get(NodeConfig.SHARE_LOCAL_MODEL, DEFAULT_SHARE_LOCAL_MODEL)
        if not isinstance(value, bool):
            raise ValueError(
                f"node config `{NodeConfig.SHARE_LOCAL_MODEL}` must be true or false, got {value!r}"
            )
        return value
    return site_name in {name.strip() for name in settings.sim_share_local_model.split(",") if name.strip()}


def refused_sharing(reason: str) -> RecordDict:
    """A local-model reply without the model: the status and the reason, nothing else."""
    return RecordDict(
        {Record.SHARING: ConfigRecord({Validation.STATUS: Status.REFUSED, Validation.REASON: reason})}
    )


def refused_cross_evaluation(reason: str, min_report_cases: int) -> RecordDict:
    """A cross-evaluate reply without numbers: the site takes no part in the matrix."""
    validation = {
        Validation.STATUS: Status.REFUSED,
        Validation.REASON: reason,
        Validation.MIN_REPORT_CASES: min_report_cases,
    }
    return RecordDict({Record.VALIDATION: ConfigRecord(validation)})
