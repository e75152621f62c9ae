"""An update that points away from the round's coordinate-wise median update is left out of the aggregate.

With fewer than half the sites attacking, the coordinate-wise median of the round's updates (weights minus the
global model they were sent) lies among the honest ones, whatever the attackers send. UpdateDirection drops
every update whose cosine similarity with that median is below `min_cosine`: a sign-flipped update, or one
trained against the federation's labels, points away from it; an honest one, however non-IID its site, points
the same way. The idea is FLTrust's trust score (Cao et al., NDSS 2021: ReLU of the cosine with a reference
update), with the coordinate-wise median (Yin et al., ICML 2018) as the reference instead of a root dataset the
coordinator does not have. Magnitudes are the update-norm bound's job (update_norm.UpdateNormBound, outside this
wrapper); this one looks only at directions, so the mean inside keeps its case-count weights.
"""

from collections.abc import Iterable
from logging import WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from models.shared.wire import Record
from models.transport import decode
from server_app.strategies.wrapper import StrategyWrapper


class UpdateDirection(StrategyWrapper):
    """The inner strategy aggregating only the updates within `min_cosine` of the round's median update."""

    def __init__(self, strategy: Strategy, min_cosine: float) -> None:
        super().__init__(strategy)
        self.min_cosine = min_cosine
        self.reference: dict[str, np.ndarray] = {}
        self.cosines: dict[int, dict[int, float]] = {}
        """Round → node → cosine of its update with the round's median update (left out when below min_cosine)."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.reference = {
            name: np.asarray(array.numpy(), dtype=np.float64).ravel()
            for name, array in arrays.items()
            if np.dtype(array.dtype).kind == "f"
        }
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        weighed = [r for r in replies if not r.has_error() and Record.ARRAYS in r.content.array_records]
        if len(weighed) < 3 or not self.reference:  # no median to stand for the honest sites
            return self.strategy.aggregate_train(server_round, replies)
        updates = np.stack([self._update(r) for r in weighed])
        cosines = dict(zip(map(id, weighed), similarity(updates), strict=True))
        recorded = self.cosines.setdefault(server_round, {})
        kept = []
        for reply in replies:
            cosine = cosines.get(id(reply))
            if cosine is not None:
                recorded[reply.metadata.src_node_id] = cosine
            if cosine is not None and cosine < self.min_cosine:
                log(
                    WARNING,
                    "Round %d: leaving out the update of node %s: cosine %.2f with the median update, below %g",
                    server_round,
                    reply.metadata.src_node_id,
                    cosine,
                    self.min_cosine,
                )
            else:
                kept.append(reply)
        return self.strategy.aggregate_train(server_round, kept)

    def update_cosines(self, server_round: int) -> dict[int, float]:
        """Node → cosine of its update with the round's median update ({} for a round without one)."""
        return dict(self.cosines.get(server_round, {}))

    def _update(self, reply: Message) -> np.ndarray:
        arrays = decode(reply.content[Record.ARRAYS])
        return np.concatenate(
            [
                np.asarray(arrays[name].numpy(), dtype=np.float64).ravel() - ref
                for name, ref in self.reference.items()
            ]
        )


def similarity(updates: np.ndarray) -> list[float]:
    """Each row's cosine similarity with the coordinate-wise median of the rows (0 for a zero row)."""
    median = np.median(updates, axis=0)
    norms = np.linalg.norm(updates, axis=1) * np.linalg.norm(median)
    return [float(u @ median / n) if n > 0 else 0.0 for u, n in zip(updates, norms, strict=True)]
