"""The coordinator's schedule of the sites' learning rate: each train instruction carries the share of a site's own
learning rate that round trains with (models.shared.wire.LR_SCALE).

`constant` (the default) trains every round at the sites' own rate, as centralized training does; `cosine` falls
from 1 at round 1 to `lr-final-share` at the last round, so late rounds move each site's model less. Cosine was the
default while the loss and sampler still let the averaged model swing on a real brain; with them fixed, constant
ends higher on the consortium and anatomy presets and stays within the stability targets (bench/RESULTS.md). The
schedule is the coordinator's (one for every site, so the mean stays a mean of comparable steps); the share is at
most 1, so a site never trains faster than its own `learning-rate`.
"""

import math
from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from models.shared.wire import LR_SCALE
from server_app.strategies.wrapper import StrategyWrapper


def lr_share(schedule: str, server_round: int, num_rounds: int, final_share: float) -> float:
    """The share in (0, 1] of the sites' learning rate at `server_round` (1-based) of `num_rounds`.

    cosine: final + (1 − final)·(1 + cos(π·(r − 1)/(R − 1)))/2, so 1 at round 1 and `final_share` at round R
    (a resumed or extended run past R stays at `final_share`); constant: 1."""
    if schedule == "constant" or num_rounds <= 1:
        return 1.0
    progress = min(1.0, max(0.0, (server_round - 1) / (num_rounds - 1)))
    return final_share + (1.0 - final_share) * (1.0 + math.cos(math.pi * progress)) / 2.0


class LearningRateSchedule(StrategyWrapper):
    """The inner strategy's train instructions, each with this round's LR_SCALE in its config."""

    def __init__(self, strategy: Strategy, schedule: str, num_rounds: int, final_share: float) -> None:
        super().__init__(strategy)
        self.schedule, self.num_rounds, self.final_share = schedule, num_rounds, final_share

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        scheduled = ConfigRecord(dict(config))
        scheduled[LR_SCALE] = lr_share(self.schedule, server_round, self.num_rounds, self.final_share)
        return self.strategy.configure_train(server_round, arrays, scheduled, grid)
