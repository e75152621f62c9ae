"""A behaviour the coordinator does not have, added from outside server_app: a wrapper defined here composes with
every base strategy of the table, at either end of the wrapper stack, and really changes the aggregate."""

from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from strategy_rounds import settings_of, train_round

from models.presets import build_model
from models.weights import to_record
from server_app.coordinator_settings import StrategySettings
from server_app.rounds.loop import ALL_SELECTED
from server_app.strategies.base import BASE_STRATEGIES
from server_app.strategies.registry import WRAPPERS, Wrapper, build_strategy
from server_app.strategies.wrapper import StrategyWrapper, layers


class Damped(StrategyWrapper):
    """Moves the global model only `factor` of the way to what the strategy inside aggregated, and records each
    aggregate call: (server round, number of replies)."""

    def __init__(self, strategy: Strategy, factor: float) -> None:
        super().__init__(strategy)
        self.factor = factor
        self.current: ArrayRecord | None = None
        self.calls: list[tuple[int, int]] = []

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.current = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self.calls.append((server_round, len(replies)))
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None or self.current is None:
            return arrays, metrics
        damped = {
            name: Array((old.numpy() + self.factor * (arrays[name].numpy() - old.numpy())).astype(np.float32))
            for name, old in self.current.items()
        }
        return ArrayRecord(damped), metrics


def damped(inner: Strategy, settings: StrategySettings, n_sites: int) -> Strategy:
    return Damped(inner, factor=0.25)


DAMPED = Wrapper("damped", lambda settings: True, damped)
PLACES = {"innermost": (DAMPED, *WRAPPERS), "outermost": (*WRAPPERS, DAMPED)}


@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("strategy", list(BASE_STRATEGIES))
def test_a_new_wrapper_composes_with_every_base_strategy(flower_task, strategy, place):
    settings = settings_of(
        strategy=strategy, server_lr=0.05, num_malicious_nodes=0
    )  # krum: 3 sites tolerate f = 0
    start, *sites = (to_record(build_model("tiny", seed=seed)) for seed in (0, 1, 2, 3))
    updates = list(zip(sites, (3, 5, 9), strict=True))

    plain = build_strategy(settings, 3, **ALL_SELECTED).run
    composed = build_strategy(settings, 3, wrappers=PLACES[place], **ALL_SELECTED).run
    expected, expected_metrics = train_round(plain, 1, start, updates)
    arrays, metrics = train_round(composed, 1, start, updates)

    wrapper = next(layer for layer in layers(composed) if isinstance(layer, Damped))
    assert wrapper.calls == [(1, 3)]
    assert (wrapper is composed) == (place == "outermost")
    for name, old in start.items():
        moved, full = arrays[name].numpy() - old.numpy(), expected[name].numpy() - old.numpy()
        np.testing.assert_allclose(moved, 0.25 * full, rtol=1e-5, atol=1e-6)
    assert any(np.abs(expected[name].numpy() - old.numpy()).max() > 1e-3 for name, old in start.items())
    assert dict(metrics) == dict(expected_metrics)
