"""The federation's evaluation, pooled over the sites that reported numbers, around any strategy.

The federated loop (server_app.rounds.loop) checks every evaluate reply against the site's description and
passes only sound ones, sorted by site. Among them, a reply in which a site's policy suppressed or refused its
numbers carries no metrics and is left out; what one site's policy withheld (a median below its
min-position-cases) is not pooled from the others either. The pooled record is server_app.run_record.pooled's
(means weighted by cases, counts summed). It replaces the inner strategy's `aggregate_evaluate`, which is not
called: Flower's requires every reply to carry one MetricRecord with the same keys and would end the run on
the first reply that did not.
"""

from collections.abc import Iterable

from flwr.app import Message, MetricRecord, RecordDict

from models.shared.wire import NUM_EXAMPLES, WITHOUT_NUMBERS, Record
from server_app.rounds.reply_checks import validation_status
from server_app.run_record.pooled import pooled_metrics
from server_app.strategies.wrapper import StrategyWrapper


class PooledEvaluation(StrategyWrapper):
    """The inner strategy, with the evaluation pooled over what pools exactly, from the reporting sites."""

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        reported = [
            reply.content
            for reply in replies
            if not reply.has_error() and validation_status(reply.content) not in WITHOUT_NUMBERS
        ]
        return pooled_metrics(_common_keys(reported), NUM_EXAMPLES) if reported else None


def _common_keys(contents: list[RecordDict]) -> list[RecordDict]:
    """Each reply's metrics cut to the keys every reply has: what one site's policy withheld is not pooled
    from the others either. New records: the replies keep all of their numbers for the per-site records."""
    records = [content[Record.METRICS] for content in contents]
    common = set.intersection(*(set(record.keys()) for record in records))
    return [
        RecordDict({Record.METRICS: MetricRecord({k: v for k, v in r.items() if k in common})})
        for r in records
    ]
