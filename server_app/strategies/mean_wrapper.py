"""The fast weighted mean (server_app.strategies.fast_mean) in place of Flower's, in any mean-based strategy.

FastMean wraps a strategy and, for the length of its `aggregate_train`, has Flower's averaging call answered
by `weighted_mean` (the seam: server_app.strategies.mean_seam, `aggregate_arrayrecords` as
FedAvg.aggregate_train calls it in flwr 1.42). Everything else the inner strategy does stays Flower's: its
reply checks and log lines, its metrics, and what it makes of the mean (FedAdam's and FedYogi's server step),
so each strategy of the table gets the fast mean without a line of its own. A strategy that does not average
(FedMedian) is unaffected.

An update with non-finite values is dropped (`reject_reply` logs it) and the inner strategy aggregates the
others. With `uniform_weights` every site counts the same (what central DP's noise is calibrated for) instead
of by the strategy's weighing key (`num-examples`).
"""

from collections.abc import Iterable
from logging import WARNING

from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp.strategy import Strategy

from server_app.strategies import mean_seam
from server_app.strategies.fast_mean import NonFiniteUpdate, weighted_mean
from server_app.strategies.wrapper import StrategyWrapper


class NonFiniteReplies(ValueError):
    """Replies whose weights hold NaN or infinity: (reply content, name of its first offending array)."""

    def __init__(self, bad: list[tuple[RecordDict, str]]) -> None:
        super().__init__(f"non-finite weights in {len(bad)} update(s)")
        self.bad = bad


class FastMean(StrategyWrapper):
    """The inner strategy with `weighted_mean` as its averaging step, non-finite updates dropped."""

    def __init__(self, strategy: Strategy, *, uniform_weights: bool = False) -> None:
        super().__init__(strategy)
        self.uniform_weights = uniform_weights
        mean_seam.install()

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        remaining = list(replies)
        while True:
            try:
                with mean_seam.averaging(self.mean):
                    return self.strategy.aggregate_train(server_round, remaining)
            except NonFiniteReplies as error:
                kept = self._without(remaining, error.bad)
                if len(kept) == len(remaining):  # not the replies' own contents: nothing to drop
                    raise
                remaining = kept

    def mean(self, contents: list[RecordDict], weighted_by_key: str) -> ArrayRecord:
        """Flower's averaging signature: the mean of each content's (one) ArrayRecord, weighted by the value
        of `weighted_by_key` in its (one) MetricRecord, or equally with `uniform_weights`."""
        weights = [
            1.0 if self.uniform_weights else float(next(iter(c.metric_records.values()))[weighted_by_key])
            for c in contents
        ]
        try:
            return weighted_mean([next(iter(c.array_records.values())) for c in contents], weights)
        except NonFiniteUpdate as error:
            raise NonFiniteReplies([(contents[index], name) for index, name in error.bad.items()]) from error

    def _without(self, replies: list[Message], bad: list[tuple[RecordDict, str]]) -> list[Message]:
        """The replies without those whose content is `bad`, each dropped one logged."""
        kept = []
        for reply in replies:
            names = [name for content, name in bad if content is reply.content]
            if names:
                self.reject_reply(reply, f"weights of {names[0]!r} are not finite")
            else:
                kept.append(reply)
        return kept

    def reject_reply(self, reply: Message, problem: str) -> None:
        """Log a dropped reply."""
        log(WARNING, "Dropping the reply of node %s: %s", reply.metadata.src_node_id, problem)
