"""FedAvg weighted by `num-examples` that files every site's results under the site's name.

Unlike Flower's FedAvg, one malformed or non-finite reply does not end the run: it is dropped, the
site is named in the log, and the round goes on with the others.
"""

import math
from collections.abc import Iterable
from logging import WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from server_app.run_folder import RunFolder
from server_app.site_directory import SiteDirectory


class SiteFedAvg(FedAvg):
    """FedAvg + per-site records in the run folder; `latest_evaluation` holds the last weighted means."""

    def __init__(self, *, sites: SiteDirectory, run: RunFolder, model_keys: Iterable[str], **fedavg: object) -> None:
        super().__init__(**fedavg)
        self.sites = sites
        self.run = run
        self.model_keys = frozenset(model_keys)
        self.latest_evaluation: MetricRecord | None = None
        self._train_metrics: dict[int, dict[str, float]] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self.sites.learn(grid, (m.metadata.dst_node_id for m in messages))
        return messages

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        messages = list(super().configure_evaluate(server_round, arrays, config, grid))
        self.sites.learn(grid, (m.metadata.dst_node_id for m in messages))
        return messages

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept = self._keep_sound(replies, self._train_reply_problem)
        self._train_metrics = {
            m.metadata.src_node_id: dict(next(iter(m.content.metric_records.values())))
            for m in kept if not m.has_error()
        }
        return super().aggregate_train(server_round, kept)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        kept = self._keep_sound(replies, self._evaluate_reply_problem)
        for reply in kept:
            if reply.has_error():
                continue
            node = reply.metadata.src_node_id
            metrics = dict(next(iter(reply.content.metric_records.values())))
            self.run.append_metrics({
                "round": server_round,
                "site": self.sites.name(node),
                "n_cases": int(metrics.pop(self.weighted_by_key)),
                "metrics": metrics,
                "train": self._train_metrics.get(node),
            })
        self.latest_evaluation = super().aggregate_evaluate(server_round, kept)
        return self.latest_evaluation

    def _keep_sound(self, replies: Iterable[Message], problem_of) -> list[Message]:
        """Error replies pass through (FedAvg counts and logs them); malformed ones are dropped here."""
        kept = []
        for reply in replies:
            if reply.has_error():
                if reply.metadata.src_node_id != 1:  # 1: the SuperLink itself reporting an unreachable node
                    log(WARNING, "Site %s failed: %s", self.sites.name(reply.metadata.src_node_id), reply.error.reason)
                kept.append(reply)
                continue
            problem = problem_of(reply)
            if problem:
                log(WARNING, "Dropping the reply of site %s: %s", self.sites.name(reply.metadata.src_node_id), problem)
            else:
                kept.append(reply)
        return kept

    def _metric_problem(self, reply: Message) -> str | None:
        records = reply.content.metric_records
        if len(records) != 1:
            return f"expected one MetricRecord, got {len(records)}"
        metrics = next(iter(records.values()))
        weight = metrics.get(self.weighted_by_key)
        if not isinstance(weight, int | float) or not weight > 0:
            return f"`{self.weighted_by_key}` is {weight!r}, expected a positive number"
        for key, value in metrics.items():
            if not all(math.isfinite(v) for v in (value if isinstance(value, list) else [value])):
                return f"metric {key!r} is not finite"
        return None

    def _train_reply_problem(self, reply: Message) -> str | None:
        records = reply.content.array_records
        if len(records) != 1:
            return f"expected one ArrayRecord, got {len(records)}"
        arrays = next(iter(records.values()))
        if set(arrays.keys()) != self.model_keys:
            return "its weights do not match the global model's parameter names (another model preset?)"
        for name, array in arrays.items():
            if not np.isfinite(array.numpy()).all():
                return f"weights of {name!r} are not finite"
        return self._metric_problem(reply)

    def _evaluate_reply_problem(self, reply: Message) -> str | None:
        return self._metric_problem(reply)
