"""Flower's FedOpt strategies (FedAdam, FedYogi) as the coordinator runs them: float arrays stepped only.

Flower's FedOpt steps every array of the averaged update; an integer array (a counter such as BatchNorm's
`num_batches_tracked`) is instead given the plain weighted mean the optimizer stepped from, read where the
mean is made (server_app.strategies.mean_seam.observed_means). Its state for a resumed run is the optimizer's
moments.
"""

from collections.abc import Iterable

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy.fedopt import FedOpt

from server_app.strategies.mean_seam import observed_means
from server_app.strategies.wrapper import StrategyWrapper

OPTIMIZER_STATE = ("m_t", "v_t")
"""FedOpt's moments: per-array running means of the update and of its square (numpy dicts on the strategy)."""


class ServerOptimizer(StrategyWrapper):
    """A FedOpt strategy that steps float arrays only; its state_dict holds its first and second moments."""

    def __init__(self, optimizer: FedOpt) -> None:
        super().__init__(optimizer)
        self.optimizer = optimizer

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        with observed_means() as means:
            arrays, metrics = self.optimizer.aggregate_train(server_round, replies)
        if arrays is not None and means:
            for name, array in means[-1].items():
                if np.dtype(array.dtype).kind != "f":
                    arrays[name] = array
        return arrays, metrics

    def state_dict(self) -> dict[str, object]:
        """The moments as tensors ({} before the first step), loadable with torch.load(weights_only=True)."""
        state: dict[str, object] = {}
        for key in OPTIMIZER_STATE:
            moments = getattr(self.optimizer, key)
            state[key] = {k: torch.from_numpy(np.array(v)) for k, v in moments.items()} if moments else {}
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        for key in OPTIMIZER_STATE:
            moments = state.get(key) or {}
            arrays = {k: v.numpy().copy() for k, v in moments.items()}  # type: ignore[union-attr]
            setattr(self.optimizer, key, arrays or None)
