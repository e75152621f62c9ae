"""Every site's update is measured, and clipped to `update-norm-bound`, before the strategy inside sees it.

An update is a site's weights minus the global model it was sent (float arrays; integer counters are left as
they are). UpdateNormBound records the L2 norm of each reply's update by round and node (`norms`, written to the
site's metrics.jsonl record as `update-norm` by the ServerApp, so that the report can name an outlier) and, with
a bound > 0, scales an update longer than the bound down to it with Flower's own helper
(flwr.supercore.differential_privacy.compute_clip_model_update, the clipping of its DP fixed-clipping wrappers):
whatever a site sends, it moves the global model by at most bound × its share of the mean. With a median factor
> 0 the limit is also that multiple of the median of the round's norms (the adaptive clipping of FLAME, Nguyen et
al., USENIX Security 2022): an honest update's scale, whatever the model preset, while fewer than half the sites
attack. With a drop factor > 0
an update whose norm is above that multiple of the round's median norm is left out instead of clipped: no honest
training result lands that far from the others (the largest honest norm was 2.3 × the round's median in 40
rounds of bench/adversaries.py, 4 sites of the `demo` preset), while clipped, a scaled update would still enter the mean at the clipped norm in its own direction with
all the weight its claimed cases give it. An update whose norm is not finite (a float32 overflow of finite
weights) is dropped.

The default bound, 10.0, is about 1.5 × the largest honest update norm measured with the default `small` preset:
on the 4-site `oncofed synth --preset tiny` federation (2 local epochs, learning rate 0.002, seed 0) the honest
norms were 4.8-6.8 in rounds 1-2 with the `small` model and 0.74-1.31 in rounds 1-3 with the `tiny` one (so a
tiny-preset run is bounded loosely: ~8 × its honest norms; set the bound lower there). A site with many more cases
than that takes more steps and can pass it honestly: on the `consortium` preset the 40-case centre's norms were
10-12.8 in every round (`small`, 4 mm, 16³ patches), so it was clipped by up to a fifth; without the bound the
pooled Dice was the same within 0.001 over three seeds (bench/RESULTS.md, consortium sections).
The wrapper sits just inside Transport, so it measures against the weights exactly as the sites received them.
"""

from collections.abc import Iterable
from logging import WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore.differential_privacy import compute_clip_model_update, get_norm

from models.shared.wire import Record
from models.transport import decode
from server_app.strategies.wrapper import StrategyWrapper


class UpdateNormBound(StrategyWrapper):
    """The inner strategy aggregating updates clipped to `bound` (0: not clipped), every norm recorded."""

    def __init__(
        self, strategy: Strategy, bound: float, median_factor: float = 0.0, drop_factor: float = 0.0
    ) -> None:
        super().__init__(strategy)
        self.bound = bound
        self.median_factor = median_factor
        self.drop_factor = drop_factor
        self.reference: dict[str, np.ndarray] = {}
        """The float arrays of the global model last sent for training, float64."""
        self.norms: dict[int, dict[int, float]] = {}
        """Round → node → L2 norm of that node's update, as it arrived (before clipping)."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.reference = {
            name: np.asarray(array.numpy(), dtype=np.float64)
            for name, array in arrays.items()
            if np.dtype(array.dtype).kind == "f"
        }
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept, updates = [], []
        norms = self.norms.setdefault(server_round, {})
        for reply in replies:
            if reply.has_error() or Record.ARRAYS not in reply.content.array_records or not self.reference:
                kept.append(reply)
                continue
            node = reply.metadata.src_node_id
            arrays = decode(reply.content[Record.ARRAYS])
            reply.content[Record.ARRAYS] = arrays
            norms[node] = norm = self._norm(arrays)
            if np.isfinite(norm):
                kept.append(reply)
                updates.append((reply, norm))
            else:
                log(
                    WARNING,
                    "Round %d: dropping the update of node %s: its norm is not finite",
                    server_round,
                    node,
                )
        finite = [norm for _, norm in updates]
        limit, drop = self.limit(finite), self.drop_limit(finite)
        left_out: set[int] = set()
        for reply, norm in updates:
            if norm > drop:
                log(
                    WARNING,
                    "Round %d: leaving out the update of node %s: norm %.3g, above %g × the round's median",
                    server_round,
                    reply.metadata.src_node_id,
                    norm,
                    self.drop_factor,
                )
                left_out.add(id(reply))
            elif norm > limit:
                self._clip(reply, limit)
        return self.strategy.aggregate_train(server_round, [r for r in kept if id(r) not in left_out])

    def limit(self, norms: list[float]) -> float:
        """The norm the round's updates are clipped to: the bound, and `median_factor` × their median (inf: none)."""
        limits = [self.bound] if self.bound > 0 else []
        if self.median_factor > 0 and norms:
            limits.append(self.median_factor * float(np.median(norms)))
        return min(limits, default=float("inf"))

    def drop_limit(self, norms: list[float]) -> float:
        """The norm above which an update is left out: `drop_factor` × the round's median norm (inf: off)."""
        if self.drop_factor > 0 and norms:
            return self.drop_factor * float(np.median(norms))
        return float("inf")

    def _norm(self, arrays: ArrayRecord) -> float:
        """The L2 norm of the update `arrays` make against the reference."""
        names = [name for name in self.reference if name in arrays]
        return float(
            get_norm(
                [np.asarray(arrays[name].numpy(), dtype=np.float64) - self.reference[name] for name in names]
            )
        )

    def _clip(self, reply: Message, limit: float) -> None:
        """The reply's float arrays replaced by its update scaled down to `limit`."""
        arrays = reply.content[Record.ARRAYS]
        names = [name for name in self.reference if name in arrays]
        received = [np.asarray(arrays[name].numpy(), dtype=np.float64) for name in names]
        compute_clip_model_update(received, [self.reference[name] for name in names], limit)
        clipped = {name: Array(value.astype(np.float32)) for name, value in zip(names, received, strict=True)}
        reply.content[Record.ARRAYS] = ArrayRecord({name: clipped.get(name, arrays[name]) for name in arrays})

    def update_norms(self, server_round: int) -> dict[int, float]:
        """Node → norm of its update in `server_round` ({} for a round without training)."""
        return dict(self.norms.get(server_round, {}))
