"""FedAvg weighted by `num-examples` (server_app.strategies.fast_mean's fast weighted mean), over replies the coordinator
has already checked.

The federated loop (server_app.rounds.loop) selects the sites, checks every reply against the global model
and the site's description (server_app.rounds.reply_checks), and passes only sound, mutually consistent replies, sorted
by site: Flower's FedAvg would otherwise end the run on one malformed or inconsistent reply. Replies in which a
site's policy stopped the phase never reach the strategy's training average (a train reply declined or refused
carries no weights); an evaluate reply suppressed or refused carries no metrics and is left out of the pooled
evaluation (server_app.run_record.pooled), which FedAvg's reply-consistency check would otherwise trip on. What one site's
policy withheld (a median below its min-position-cases) is not pooled from the others either.
"""

from collections.abc import Iterable

from flwr.app import Message, MetricRecord, RecordDict

from models.shared.wire import NUM_EXAMPLES, WITHOUT_NUMBERS, Record
from server_app.rounds.reply_checks import validation_status
from server_app.run_record.pooled import pooled_metrics
from server_app.strategies.fast_mean import FastMean


class SiteFedAvg(FastMean):
    """FedAvg whose pooled evaluation covers only what pools exactly, over the sites that reported numbers; the
    strategies of server_app.strategies.registry (FedProx, FedAdam, FedYogi, transport, central DP) build on it."""

    def __init__(self, **fedavg: object) -> None:
        super().__init__(
            weighted_by_key=NUM_EXAMPLES,
            arrayrecord_key=Record.ARRAYS,
            configrecord_key=Record.CONFIG,
            evaluate_metrics_aggr_fn=pooled_metrics,
            **fedavg,
        )

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        reported = [
            reply.content
            for reply in replies
            if not reply.has_error() and validation_status(reply.content) not in WITHOUT_NUMBERS
        ]
        return (
            self.evaluate_metrics_aggr_fn(_common_keys(reported), self.weighted_by_key) if reported else None
        )


def _common_keys(contents: list[RecordDict]) -> list[RecordDict]:
    """Each reply's metrics cut to the keys every reply has: what one site's policy withheld is not pooled from
    the others either. New records: the replies keep all of their numbers for the per-site records."""
    records = [content[Record.METRICS] for content in contents]
    common = set.intersection(*(set(record.keys()) for record in records))
    return [
        RecordDict({Record.METRICS: MetricRecord({k: v for k, v in r.items() if k in common})})
        for r in records
    ]
