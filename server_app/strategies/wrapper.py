"""A Strategy around another one: the shape every behaviour the coordinator adds to a strategy takes.

As Flower's DifferentialPrivacyServerSideFixedClipping does, a wrapper holds the strategy it wraps
(`strategy`) and passes every hook to it; a wrapper overrides only the hooks its one behaviour changes, and
any Strategy (Flower's, or another wrapper) can be inside. The state a resumed run needs passes through the
same way: `state_dict()` is the inner strategy's unless a wrapper keeps state of its own.
"""

from collections.abc import Iterable, Iterator
from logging import INFO

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy


class StrategyWrapper(Strategy):
    """Every hook of `strategy`, unchanged; subclasses change one behaviour."""

    def __init__(self, strategy: Strategy) -> None:
        super().__init__()
        self.strategy = strategy

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.strategy.aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        log(INFO, "\t├──> %s around:", type(self).__name__)
        self.strategy.summary()

    def state_dict(self) -> dict[str, object]:
        """The inner strategy's state ({} when it keeps none)."""
        state_dict = getattr(self.strategy, "state_dict", None)
        return state_dict() if state_dict is not None else {}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Give the inner strategy its saved state; state for a strategy that keeps none is an error."""
        load = getattr(self.strategy, "load_state_dict", None)
        if load is not None:
            load(state)
        elif state:
            raise ValueError(
                f"saved strategy state {sorted(state)} but {type(self.strategy).__name__} keeps none"
            )


def layers(strategy: Strategy) -> Iterator[Strategy]:
    """The strategy and every strategy inside it, outermost first (any wrapper with a `strategy` attribute,
    Flower's DP wrappers included)."""
    current: Strategy | None = strategy
    while current is not None:
        yield current
        current = getattr(current, "strategy", None)
