"""FedAvg weighted by `num-examples` that files every site's results under the site's name.

Unlike Flower's FedAvg, one malformed, non-finite or inconsistent reply does not end the run: it is dropped,
the site is named in the log, and the round goes on with the others. A site that has fewer validation cases
than its minimum replies with status suppressed (models.wire) and no metrics: it is filed as suppressed and left
out of the pooled evaluation (server_app.pooled), which FedAvg's reply-consistency check would otherwise trip on.
Likewise a site's policy replies (site_app.disclosure_policy): a train reply with status declined (fewer training
cases than the site's min-train-cases) or refused (a run setting outside the site's limits) carries no weights and
is left out of FedAvg with its reason logged; an evaluate reply "refused" is filed like a suppressed one.
"""

import math
from collections import Counter
from collections.abc import Callable, Iterable
from logging import WARNING

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid

from models.wire import (
    EVALUATE_STATUSES,
    NUM_EXAMPLES,
    REPORTED,
    SUPPRESSED,
    TRAINING_STATUSES,
    WITHOUT_NUMBERS,
    Record,
    Training,
    Validation,
    withholdable,
)
from server_app.aggregation import FastMean
from server_app.pooled import pooled_metrics
from server_app.run_folder import RunFolder
from server_app.site_directory import SiteDirectory


class SiteFedAvg(FastMean):
    """FedAvg (with the fast weighted mean) + per-site records in the run folder; `latest_evaluation` holds the
    last pooled evaluation."""

    def __init__(
        self, *, sites: SiteDirectory, run: RunFolder, model_keys: Iterable[str], **fedavg: object
    ) -> None:
        super().__init__(
            weighted_by_key=NUM_EXAMPLES,
            arrayrecord_key=Record.ARRAYS,
            configrecord_key=Record.CONFIG,
            evaluate_metrics_aggr_fn=pooled_metrics,
            **fedavg,
        )
        self.sites = sites
        self.run = run
        self.model_keys = frozenset(model_keys)
        self.latest_evaluation: MetricRecord | None = None
        self._train_metrics: dict[int, dict[str, float]] = {}
        self._train_round: int | None = None
        self.record_extras: Callable[[int, int], dict] | None = None
        """(round, node id) → more fields for that site's metrics.jsonl record (bytes sent, privacy spent)."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self.sites.learn(grid, (m.metadata.dst_node_id for m in messages))
        return messages

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(super().configure_evaluate(server_round, arrays, config, grid))
        self.sites.learn(grid, (m.metadata.dst_node_id for m in messages))
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return super().aggregate_train(server_round, self.screen_train_replies(server_round, replies))

    def screen_train_replies(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        """The train replies fit to aggregate (error replies pass, for FedAvg to count): the ones a site's policy
        stopped are logged and noted with their reason, malformed or inconsistent ones are logged and dropped.

        Central DP (server_app.strategies) screens before clipping and again inside: the notes of one round
        are kept across both calls."""
        replies = list(replies)
        stopped = {m.metadata.src_node_id: m for m in replies if _training_status(m) is not None}
        for node, reply in stopped.items():
            record = reply.content.config_records[Record.TRAINING]
            log(
                WARNING,
                "Site %s %s to train in round %d: %s",
                self.sites.name(node),
                record[Training.STATUS],
                server_round,
                record.get(Training.REASON, "no reason given"),
            )
        kept = self._consistent(
            self._keep_sound(
                [m for m in replies if m.metadata.src_node_id not in stopped], self._train_reply_problem
            )
        )
        if server_round != self._train_round:
            self._train_round, self._train_metrics = server_round, {}
        self._train_metrics.update(
            {
                m.metadata.src_node_id: dict(next(iter(m.content.metric_records.values())))
                for m in kept
                if not m.has_error()
            }
        )
        for node, reply in stopped.items():
            record = reply.content.config_records[Record.TRAINING]
            self._train_metrics[node] = {
                "status": record[Training.STATUS],
                "reason": record.get(Training.REASON, ""),
            }
        return kept

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        reported = []
        for reply in self._keep_sound(replies, self._evaluate_reply_problem):
            if reply.has_error():
                reported.append(reply)
            elif _status(reply) in WITHOUT_NUMBERS:
                self._file_evaluation(server_round, reply, None)
            else:
                reported.append(reply)
        reported = self._consistent(reported)
        for reply in reported:
            if not reply.has_error():
                self._file_evaluation(
                    server_round, reply, dict(next(iter(reply.content.metric_records.values())))
                )
        self.latest_evaluation = super().aggregate_evaluate(server_round, _common_keys(reported))
        return self.latest_evaluation

    def _file_evaluation(self, server_round: int, reply: Message, metrics: dict | None) -> None:
        """One metrics.jsonl record; a suppressed or refused site's has no metrics and no case count."""
        node = reply.metadata.src_node_id
        validation = dict(reply.content.config_records.get(Record.VALIDATION, {}))
        reason = validation.pop(Validation.REASON, None)
        if metrics is None:
            log(
                WARNING,
                "Site %s sent no validation numbers in round %d: %s",
                self.sites.name(node),
                server_round,
                reason,
            )
        self.run.append_metrics(
            {
                "round": server_round,
                "site": self.sites.name(node),
                "status": _status(reply) if metrics is None else REPORTED,
                "reason": reason,
                "withheld": list(validation.pop(Validation.WITHHELD, [])),
                "min_report_cases": validation.pop(Validation.MIN_REPORT_CASES, None),
                "n_cases": None if metrics is None else int(metrics.pop(self.weighted_by_key)),
                "metrics": metrics or {},
                "conventions": {k: v for k, v in validation.items() if k != Validation.STATUS},
                "train": self._train_metrics.get(node),
                **(self.record_extras(server_round, node) if self.record_extras else {}),
            }
        )

    def _keep_sound(self, replies: Iterable[Message], problem_of) -> list[Message]:
        """Error replies pass through (FedAvg counts and logs them); malformed ones are dropped here."""
        kept = []
        for reply in replies:
            if reply.has_error():
                if reply.metadata.src_node_id != 1:  # 1: the SuperLink itself reporting an unreachable node
                    log(
                        WARNING,
                        "Site %s failed: %s",
                        self.sites.name(reply.metadata.src_node_id),
                        reply.error.reason,
                    )
                kept.append(reply)
                continue
            problem = problem_of(reply)
            if problem:
                self.reject_reply(reply, problem)
            else:
                kept.append(reply)
        return kept

    def reject_reply(self, reply: Message, problem: str) -> None:
        """Log a reply that is left out, naming its site."""
        log(
            WARNING, "Dropping the reply of site %s: %s", self.sites.name(reply.metadata.src_node_id), problem
        )

    def _consistent(self, replies: list[Message]) -> list[Message]:
        """Keep the replies whose metric names are the most common set; FedAvg would end the run on a mismatch.
        Names a site's policy may withhold (medians below its min-position-cases, …) do not count here."""
        key_sets = {
            id(r): frozenset(k for k in next(iter(r.content.metric_records.values())) if not withholdable(k))
            for r in replies
            if not r.has_error()
        }
        if not key_sets:
            return replies
        usual = Counter(key_sets.values()).most_common(1)[0][0]
        kept = []
        for reply in replies:
            keys = key_sets.get(id(reply), usual)
            if keys == usual:
                kept.append(reply)
            else:
                log(
                    WARNING,
                    "Dropping the reply of site %s: its metric names differ from the other sites' (%s)",
                    self.sites.name(reply.metadata.src_node_id),
                    ", ".join(sorted(keys ^ usual)[:5]),
                )
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
        # Non-finite weights are found by the weighted mean itself (server_app.aggregation), in the same pass.
        return self._metric_problem(reply)

    def _evaluate_reply_problem(self, reply: Message) -> str | None:
        status = _status(reply)
        if status not in EVALUATE_STATUSES:
            return f"its validation status is {status!r}, expected one of {', '.join(EVALUATE_STATUSES)}"
        if status not in WITHOUT_NUMBERS:
            return self._metric_problem(reply)
        if reply.content.metric_records:
            return f"it says its validation is {status} but carries metrics"
        if status != SUPPRESSED:
            return None  # refused: nothing was validated, so no minimum applies
        minimum = reply.content.config_records[Record.VALIDATION].get(Validation.MIN_REPORT_CASES)
        if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
            return (
                f"suppressed validation with `{Validation.MIN_REPORT_CASES}` {minimum!r}, expected a whole number"
                " of at least 1"
            )
        return None


def _common_keys(replies: list[Message]) -> list[Message]:
    """The replies with only the metrics every one of them has (after filing, so each site's own record keeps all
    of its numbers): what one site's policy withheld is not pooled from the others either."""
    records = [next(iter(r.content.metric_records.values())) for r in replies if not r.has_error()]
    if records:
        common = set.intersection(*(set(record.keys()) for record in records))
        for record in records:
            for key in set(record.keys()) - common:
                del record[key]
    return replies


def _training_status(reply: Message) -> str | None:
    """The status (models.wire.TRAINING_STATUSES) of a train reply the site's policy stopped (no weights), else
    None."""
    if reply.has_error() or reply.content.array_records:
        return None
    record = reply.content.config_records.get(Record.TRAINING)
    status = record.get(Training.STATUS) if record is not None else None
    return str(status) if status in TRAINING_STATUSES else None


def _status(reply: Message) -> str:
    """The reply's validation status (models.wire.EVALUATE_STATUSES); a reply without the validation record is
    reported."""
    record = reply.content.config_records.get(Record.VALIDATION)
    return str(record.get(Validation.STATUS, REPORTED)) if record is not None else REPORTED
