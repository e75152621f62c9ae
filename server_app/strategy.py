"""FedAvg weighted by `num-examples`, over replies the coordinator has already checked.

The federated loop (server_app.federated_loop) selects the sites, checks every reply against the global model
and the site's description (server_app.reply_checks), and passes only sound, mutually consistent replies, sorted
by site: Flower's FedAvg would otherwise end the run on one malformed or inconsistent reply. A site whose
validation is suppressed (fewer validation cases than its minimum) sends no metrics: it is left out of the pooled
evaluation (server_app.pooled), which FedAvg's reply-consistency check would otherwise trip on.
"""

from collections.abc import Iterable

from flwr.app import Message, MetricRecord
from flwr.serverapp.strategy import FedAvg

from server_app.pooled import pooled_metrics
from server_app.reply_checks import SUPPRESSED, validation_status


class SiteFedAvg(FedAvg):
    """FedAvg whose pooled evaluation covers only what pools exactly, over the sites that reported numbers."""

    def __init__(self, **fedavg: object) -> None:
        super().__init__(evaluate_metrics_aggr_fn=pooled_metrics, **fedavg)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        reported = [r for r in replies if r.has_error() or validation_status(r.content) != SUPPRESSED]
        return super().aggregate_evaluate(server_round, reported)
