"""What a round's checked replies do: each site's outcome filed in the round's ledger, the sound training replies
aggregated into the next global model (or the reason it stays), the sound validations pooled.

The coordinator's loop (server_app.rounds.loop) decides which messages go out and when, in either round pattern;
secure aggregation (server_app.rounds.secure_aggregation) runs its own training exchange. Both file here, so a
reply means the same in metrics.jsonl and rounds.jsonl however it travelled.
"""

from dataclasses import dataclass
from logging import INFO, WARNING

from flwr.app import ArrayRecord, Message
from flwr.common.logger import log
from flwr.serverapp.strategy import Strategy

from models.shared.wire import OutsideLimit, Record, Status, Training, Validation
from server_app.rounds.participation import OK, PhaseOutcome, RoundLedger
from server_app.rounds.reply_checks import (
    ArraySpec,
    conform,
    too_few_replies,
    training_status,
    validation_status,
)


def file_training(server_round: int, ledger: RoundLedger, name: str, reply: Message) -> bool:
    """File a sound train reply in the ledger; False when the site's policy declined or refused the round."""
    site = ledger.site(name)
    status = training_status(reply.content)
    if status is None:
        site.train, site.train_metrics = OK, dict(reply.content[Record.METRICS])
        return True
    training = reply.content[Record.TRAINING]
    reason = str(training.get(Training.REASON, "no reason given"))
    outside = OutsideLimit.from_record(training)  # a refusal's, typed (the reply checks require it)
    site.train = PhaseOutcome(status, reason)
    site.train_metrics = {"status": status, "reason": reason}
    if outside is not None:
        site.train_metrics["outside_limit"] = outside.fields()
    log(WARNING, "Round %d: site %s %s to train: %s", server_round, name, status, reason)
    return False


def unchanged(server_round: int, reason: str) -> dict:
    """The rounds.jsonl training fields of a round whose global model stays as it was, and why (logged)."""
    log(WARNING, "Round %d: global model unchanged: %s", server_round, reason)
    return {"aggregated": False, "reason": reason}


@dataclass(frozen=True)
class PhaseFiling:
    """Files one phase's replies for the loop: the strategy that aggregates, the quorum, the pooled results."""

    strategy: Strategy
    min_sites: int
    pooled: dict[int, dict]
    """Round → pooled validation over the reporting sites (the loop's, filled here)."""

    def training(
        self,
        server_round: int,
        arrays: ArrayRecord,
        spec: dict[str, ArraySpec],
        selected: dict[int, str],
        ledger: RoundLedger,
        messages: list[Message],
        sound: dict[int, Message],
        absent: dict[int, PhaseOutcome],
    ) -> tuple[ArrayRecord, dict]:
        """File the training outcomes and aggregate the sound replies into the next global model; returns it
        (`arrays` when it stays) and the round's rounds.jsonl training record."""
        for node, outcome in absent.items():
            ledger.site(selected[node]).train = outcome
        for node, reply in list(sound.items()):
            if not file_training(server_round, ledger, selected[node], reply):
                del sound[node]
        used = [selected[node] for node in sound]
        record = {"asked": sorted(selected[m.metadata.dst_node_id] for m in messages), "sound": used}
        if len(sound) < self.min_sites:
            return arrays, record | unchanged(server_round, too_few_replies(len(sound), self.min_sites))
        aggregated, _ = self.strategy.aggregate_train(server_round, list(sound.values()))
        if aggregated is None:
            return arrays, record | unchanged(server_round, "the strategy returned no model")
        log(INFO, "Round %d: global model updated from %s", server_round, ", ".join(used))
        return conform(aggregated, spec), record | {"aggregated": True, "reason": ""}

    def evaluation(
        self,
        server_round: int,
        selected: dict[int, str],
        ledger: RoundLedger,
        messages: list[Message],
        sound: dict[int, Message],
        absent: dict[int, PhaseOutcome],
    ) -> dict:
        """File the evaluate outcomes of round `server_round` and pool the sound replies; returns the round's
        rounds.jsonl evaluation record."""
        for node, outcome in absent.items():
            ledger.site(selected[node]).evaluate = outcome
        for node, reply in sound.items():
            site = ledger.site(selected[node])
            status = validation_status(reply.content)
            reason = str(reply.content[Record.VALIDATION].get(Validation.REASON, ""))
            site.evaluate = OK if status == Status.REPORTED else PhaseOutcome(status, reason)
            site.evaluation = reply
            if status != Status.REPORTED:
                log(
                    WARNING,
                    "Round %d: site %s sent no validation numbers (%s): %s",
                    server_round,
                    selected[node],
                    status,
                    reason or "no reason given",
                )
        pooled = self.strategy.aggregate_evaluate(server_round, list(sound.values())) if sound else None
        if pooled is not None:
            self.pooled[server_round] = dict(pooled)
        return {
            "asked": sorted(selected[m.metadata.dst_node_id] for m in messages),
            "sound": [selected[n] for n in sound],
        }
