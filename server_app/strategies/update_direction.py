"""An update that points away from the coordinate-wise median of the round's other updates is left out.

With fewer than half the sites attacking, the coordinate-wise median of the round's updates (weights minus the
global model they were sent) lies among the honest ones, whatever the attackers send. UpdateDirection compares
each update with the median of the *others* (cosine similarity) and leaves out sites that point away from it:
a sign-flipped update, or one trained against the federation's labels, points away from the honest
sites' median; an honest one, however non-IID its site, points the same way as the others. Leaving the update
itself out of its reference matters with few sites: with four, each coordinate's median of all is the mean of
the two middle values, one of them the attacker's own, which pulls the reference towards it (measured: a site
trained on swapped labels scored 0.15-0.24 against the median of all, 0.5-0.8 for honest sites, and −0.03 to
−0.41 against the median of the others, 0.3-0.6 for honest sites). Only the updates of sites that claim more than
`max_share` of the round's cases (the site-weight cap, `max-site-weight`: the sites whose weight it had to cut,
which still weigh the most) are checked; with no cap (1), every update. A site under the cap is kept whatever its
direction: small non-IID sites' updates do point elsewhere late in training (measured on 4 honest sites of the
`demo` preset: the two smallest scored −0.03 to −0.37 in rounds 3-5, and leaving them out cost the clean run
0.025 of pooled Dice), while a site that lies about its size gets the capped share, and it must earn it by
pointing where the others do: the swapped-labels site claiming 10^6 cases scored −0.22 to +0.02, and in a
round it was let in with half the weight the honest sites' pooled Dice fell by 0.08.

One round's cosine does not tell a liar from an honest site. As a run converges every update becomes mostly noise
(measured on the `consortium` preset, seed 0: the honest 32-training-case centre, above the cap, scored +0.51 in
round 1 and −0.01 to +0.10 from round 12 on, the five sites under the cap +0.56 … −0.23; judged round by round it
was left out in 9 of 30 rounds), and a liar's update can point with the others in some rounds (the swapped-labels
site scored +0.16 and +0.20 in rounds 2 and 4 of one run, as aligned as the honest sites, −0.31 in rounds 3 and
5). Nor does the mean of a site's cosines over the run: late rounds pull every site's mean towards zero, and in
the 3-seed plateau run of the consortium preset the honest centre's mean (+0.11 to +0.20) fell among the liar's
(+0.06 to +0.16 in bench/adversaries.py) and below the small sites' median in 11 of 60 rounds, which it lost.

What does tell them apart is whether a site's cosine rises and falls *with the others'*: its **alignment**, the
least-squares slope of its cosine on the reference sites' median cosine over the run's rounds so far
(Σ c·m / Σ m²). Rounds where the sites agree (early ones: m ≈ 0.4-0.5) weigh the most, noise rounds (m ≈ 0)
hardly count. Measured over every bench run on record: the honest centre 0.94-1.16 in all 8 consortium runs
(seeds 0-2 under three successive defaults), honest sites of the 4-site `demo` preset 0.62-1.33, the smallest
consortium site (2 training cases) 0.39-0.51; the swapped-labels liar 0.03-0.43 (two runs, every round). A
checked update is left out when its site's mean cosine over the run is below `min_cosine` **and** its alignment
is below MIN_ALIGNMENT. The rounds' cosines are part of the strategy's saved state, so a resumed run judges the
same. A site that first behaves and then turns is let in while its alignment lasts: each such round its update
is still clipped by the update-norm bound and weighed at most `max_share`. At most a minority, ⌊(n − 1)/2⌋ of
the n updates, is left out, the least aligned this round first.

The idea is FLTrust's trust score (Cao et al., NDSS 2021: ReLU of the cosine with a reference update), with the
coordinate-wise median (Yin et al., ICML 2018) as the reference instead of a root dataset the coordinator does
not have. Magnitudes are the update-norm bound's job (update_norm.UpdateNormBound, outside this wrapper); this
one looks only at directions, so the mean inside keeps its case-count weights.
"""

import statistics
from collections.abc import Iterable
from logging import WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from models.shared.wire import NUM_EXAMPLES, Record
from models.transport import decode
from server_app.strategies.wrapper import StrategyWrapper

COSINES_STATE = "update-cosines"
"""The key of the run's cosines in the strategy's saved state."""
MIN_ALIGNMENT = 0.6
"""A checked site whose alignment (slope of its cosines on the reference sites' median cosines) is below this, and
whose mean cosine is below `min_cosine`, is left out: between the liar's highest measured (0.43) and the honest
large sites' lowest (0.94; 0.62 for any honest site of a few cases or more)."""


class UpdateDirection(StrategyWrapper):
    """The inner strategy without the updates of sites (those claiming more than `max_share` of the cases; all
    with 1) whose mean cosine with the others' median update over the run is below `min_cosine` and whose
    alignment with the reference sites over the run is below MIN_ALIGNMENT."""

    def __init__(self, strategy: Strategy, min_cosine: float, max_share: float = 1.0) -> None:
        super().__init__(strategy)
        self.min_cosine = min_cosine
        self.max_share = max_share
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
        claimed = {id(r): claimed_cases(r) for r in weighed}
        total = sum(claimed.values())
        shares = {key: count / total for key, count in claimed.items()} if total > 0 else {}
        node = {id(r): r.metadata.src_node_id for r in weighed}
        checked = checked_keys(cosines, shares, self.max_share)
        run_means = {key: self.run_mean(node[key]) for key in checked}
        alignments = {
            key: alignment(self.cosines, node[key], {node[k] for k in reference_keys(key, cosines, checked)})
            for key in checked
        }
        left_out = set(left_out_of(cosines, checked, self.min_cosine, run_means, alignments))
        kept = []
        for reply in replies:
            if id(reply) in left_out:
                log(
                    WARNING,
                    "Round %d: leaving out the update of node %s: mean cosine with the others' median %.2f over"
                    " the run (%.2f this round), below %g, and alignment with the other sites %.2f, below %g",
                    server_round,
                    reply.metadata.src_node_id,
                    run_means[id(reply)],
                    cosines[id(reply)],
                    self.min_cosine,
                    alignments[id(reply)],
                    MIN_ALIGNMENT,
                )
            else:
                kept.append(reply)
        return self.strategy.aggregate_train(server_round, kept)

    def update_cosines(self, server_round: int) -> dict[int, float]:
        """Node → cosine of its update with the median of the round's others ({} for a round without one)."""
        return dict(self.cosines.get(server_round, {}))

    def run_mean(self, node_id: int) -> float:
        """The node's mean cosine over the rounds of this run it sent an update in (this one included)."""
        values = [by_node[node_id] for by_node in self.cosines.values() if node_id in by_node]
        return statistics.fmean(values) if values else 0.0

    def state_dict(self) -> dict[str, object]:
        """The inner strategy's state and the run's cosines (round → node → cosine, as strings → floats)."""
        history = {str(r): {str(n): c for n, c in by_node.items()} for r, by_node in self.cosines.items()}
        return {**super().state_dict(), COSINES_STATE: history}

    def load_state_dict(self, state: dict[str, object]) -> None:
        history: dict[str, dict[str, float]] = state.get(COSINES_STATE, {})  # type: ignore[assignment]
        self.cosines = {int(r): {int(n): float(c) for n, c in by.items()} for r, by in history.items()}
        super().load_state_dict({k: v for k, v in state.items() if k != COSINES_STATE})

    def _update(self, reply: Message) -> np.ndarray:
        arrays = decode(reply.content[Record.ARRAYS])
        return np.concatenate(
            [
                np.asarray(arrays[name].numpy(), dtype=np.float64).ravel() - ref
                for name, ref in self.reference.items()
            ]
        )


def claimed_cases(reply: Message) -> float:
    """The `num-examples` a train reply weighs with (0 without one)."""
    metrics = reply.content.metric_records.get(Record.METRICS)
    return float(metrics[NUM_EXAMPLES]) if metrics is not None and NUM_EXAMPLES in metrics else 0.0


def checked_keys(cosines: dict[int, float], shares: dict[int, float], max_share: float = 1.0) -> list[int]:
    """The keys whose direction is checked: those claiming more than `max_share` of the cases (all with 1)."""
    return [key for key in cosines if max_share >= 1 or shares.get(key, 0.0) > max_share]


def reference_keys(key: int, cosines: dict[int, float], checked: list[int]) -> list[int]:
    """Whom `key` is compared with: the keys not checked, else every other key."""
    return [k for k in cosines if k not in checked] or [k for k in cosines if k != key]


def alignment(history: dict[int, dict[int, float]], node: int, reference: set[int]) -> float:
    """Least-squares slope of `node`'s cosine on the median cosine of the `reference` nodes, over the rounds of
    `history` (round → node → cosine) where both are present: ≈ 1 for a site whose update turns with the others',
    ≈ 0 for one that does not. 1.0 when no such round has a non-zero median (nothing to judge by)."""
    weighted, scale = 0.0, 0.0
    for by_node in history.values():
        others = [cosine for other, cosine in by_node.items() if other in reference and other != node]
        if node in by_node and others:
            median = statistics.median(others)
            weighted += by_node[node] * median
            scale += median * median
    return weighted / scale if scale > 0 else 1.0


def left_out_of(
    cosines: dict[int, float],
    checked: list[int],
    min_cosine: float,
    run_means: dict[int, float],
    alignments: dict[int, float],
) -> list[int]:
    """The keys left out: among the `checked` ones, each whose mean cosine over the run is below `min_cosine` and
    whose alignment is below MIN_ALIGNMENT. Least aligned this round first, at most ⌊(n − 1)/2⌋ of the n."""
    below = [
        (cosines[key], key)
        for key in checked
        if run_means[key] < min_cosine and alignments[key] < MIN_ALIGNMENT
    ]
    return [key for _, key in sorted(below)[: (len(cosines) - 1) // 2]]


def similarity(updates: np.ndarray) -> list[float]:
    """Each row's cosine similarity with the coordinate-wise median of the other rows (0 for a zero row)."""
    cosines = []
    for index, update in enumerate(updates):
        median = np.median(np.delete(updates, index, axis=0), axis=0)
        norm = float(np.linalg.norm(update) * np.linalg.norm(median))
        cosines.append(float(update @ median / norm) if norm > 0 else 0.0)
    return cosines
