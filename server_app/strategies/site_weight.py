"""No site's update weighs more than `max-site-weight` of the mean, whatever case count it claims.

A site's weight in FedAvg's mean is the `num-examples` it replies with, bounded before it gets here by the cases
it first described and the coordinator's `max-cases` (server_app.rounds.site_directory, reply_checks). A site
that (truthfully or not) holds most of the federation's cases would still steer the mean alone; SiteWeightCap
rewrites the replies' weighing counts so that no share exceeds the cap and the others keep their proportions
(`capped_shares`). Where the cap cannot hold (fewer than 1/cap sites replied) every site weighs the same.
Strategies that do not weigh (fedmedian, fedtrimmedavg, krum) are unaffected.
"""

from collections.abc import Iterable
from logging import INFO

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp.strategy import Strategy

from models.shared.wire import NUM_EXAMPLES, Record
from server_app.strategies.wrapper import StrategyWrapper


def capped_shares(weights: list[float], cap: float) -> list[float]:
    """The weights' shares of their sum, none above `cap`, the excess given to the uncapped ones in proportion
    (water-filling); equal shares when len(weights) · cap < 1."""
    n = len(weights)
    if n == 0:
        return []
    if n * cap < 1:
        return [1.0 / n] * n
    capped: set[int] = set()
    while True:
        free = 1.0 - cap * len(capped)
        rest = sum(weights[i] for i in range(n) if i not in capped)
        shares = [cap if i in capped else free * weights[i] / rest for i in range(n)]
        over = {i for i in range(n) if i not in capped and shares[i] > cap * (1 + 1e-12)}
        if not over:
            return shares
        capped |= over


class SiteWeightCap(StrategyWrapper):
    """The inner strategy aggregating replies whose `num-examples` give no site more than `max_share`."""

    def __init__(self, strategy: Strategy, max_share: float) -> None:
        super().__init__(strategy)
        self.max_share = max_share

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        weighed = [r for r in replies if not r.has_error() and Record.METRICS in r.content.metric_records]
        claimed = [float(r.content[Record.METRICS][NUM_EXAMPLES]) for r in weighed]
        if weighed and self.max_share < 1:
            total = sum(claimed)
            for reply, share, count in zip(
                weighed, capped_shares(claimed, self.max_share), claimed, strict=True
            ):
                if share * total < count:
                    log(
                        INFO,
                        "Round %d: node %s weighs %.3g of the mean, not its claimed %.3g",
                        server_round,
                        reply.metadata.src_node_id,
                        share,
                        count / total,
                    )
                reply.content[Record.METRICS][NUM_EXAMPLES] = share * total
        return self.strategy.aggregate_train(server_round, replies)
