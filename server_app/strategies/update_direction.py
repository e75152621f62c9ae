"""An update that points away from the coordinate-wise median of the round's other updates is left out.

With fewer than half the sites attacking, the coordinate-wise median of the round's updates (weights minus the
global model they were sent) lies among the honest ones, whatever the attackers send. UpdateDirection compares
each update with the median of the *others* and drops every update whose cosine similarity with it is below
`min_cosine`: a sign-flipped update, or one trained against the federation's labels, points away from the honest
sites' median; an honest one, however non-IID its site, points the same way as the others. Leaving the update
itself out of its reference matters with few sites: with four, each coordinate's median of all is the mean of
the two middle values, one of them the attacker's own, which pulls the reference towards it (measured: a site
trained on swapped labels scored 0.15-0.24 against the median of all, 0.5-0.8 for honest sites, and −0.03 to
−0.41 against the median of the others, 0.3-0.6 for honest sites). The check speaks only while the round's
updates share a direction, i.e. while the median of their cosines is at least MIN_AGREEMENT: late in training,
near a minimum, honest updates are mostly noise (measured on 4 honest sites: median cosine 0.65 and 0.55 in
rounds 1-2, 0.24, 0.02 and −0.16 in rounds 3-5, one honest site at −0.03 to −0.37 in each of those), and leaving
one out then cost the clean run 0.025 of pooled Dice without removing anything that steers. And at most a
minority, ⌊(n − 1)/2⌋ of the n updates, is left out, the least aligned first.

The idea is FLTrust's trust score (Cao et al., NDSS 2021: ReLU of the cosine with a reference update), with the
coordinate-wise median (Yin et al., ICML 2018) as the reference instead of a root dataset the coordinator does
not have. Magnitudes are the update-norm bound's job (update_norm.UpdateNormBound, outside this wrapper); this
one looks only at directions, so the mean inside keeps its case-count weights.
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
    """The inner strategy aggregating only the updates within `min_cosine` of the others' median update."""

    def __init__(self, strategy: Strategy, min_cosine: float) -> None:
        super().__init__(strategy)
        self.min_cosine = min_cosine
        self.reference: dict[str, np.ndarray] = {}
        self.cosines: dict[int, dict[int, float]] = {}
        """Round → node → cosine of its update with the median of the round's other updates."""

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
        for reply in weighed:
            recorded[reply.metadata.src_node_id] = cosines[id(reply)]
        left_out = set(left_out_of(cosines, self.min_cosine))
        kept = []
        for reply in replies:
            if id(reply) in left_out:
                log(
                    WARNING,
                    "Round %d: leaving out the update of node %s: cosine %.2f with the others' median, below %g",
                    server_round,
                    reply.metadata.src_node_id,
                    cosines[id(reply)],
                    self.min_cosine,
                )
            else:
                kept.append(reply)
        return self.strategy.aggregate_train(server_round, kept)

    def update_cosines(self, server_round: int) -> dict[int, float]:
        """Node → cosine of its update with the median of the round's others ({} for a round without one)."""
        return dict(self.cosines.get(server_round, {}))

    def _update(self, reply: Message) -> np.ndarray:
        arrays = decode(reply.content[Record.ARRAYS])
        return np.concatenate(
            [
                np.asarray(arrays[name].numpy(), dtype=np.float64).ravel() - ref
                for name, ref in self.reference.items()
            ]
        )


MIN_AGREEMENT = 0.3
"""The median cosine at which a round's updates share a direction that one of them can point away from: above
the honest sites' median from round 3 on (0.24 and lower) and below it in rounds 1-2 (0.55 and higher), and below
the round's median in every round an attacker trained on swapped labels pointed away (0.35 to 0.52;
bench/adversaries.py, 4 sites of the `demo` preset)."""


def left_out_of(cosines: dict[int, float], min_cosine: float) -> list[int]:
    """The keys whose cosine is below `min_cosine`, least aligned first, at most ⌊(n − 1)/2⌋ of the n; none
    while the median cosine is below MIN_AGREEMENT (the round's updates share no direction)."""
    if not cosines or float(np.median(list(cosines.values()))) < MIN_AGREEMENT:
        return []
    below = sorted((c, key) for key, c in cosines.items() if c < min_cosine)
    return [key for _, key in below[: (len(cosines) - 1) // 2]]


def similarity(updates: np.ndarray) -> list[float]:
    """Each row's cosine similarity with the coordinate-wise median of the other rows (0 for a zero row)."""
    cosines = []
    for index, update in enumerate(updates):
        median = np.median(np.delete(updates, index, axis=0), axis=0)
        norm = float(np.linalg.norm(update) * np.linalg.norm(median))
        cosines.append(float(update @ median / norm) if norm > 0 else 0.0)
    return cosines
