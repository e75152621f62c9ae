"""The coordinator's rounds, one job: quorum, per-phase deadlines, checked replies, named absences, a checkpoint per round.

Replaces Flower's `Strategy.start`, which waits without a deadline for its minimum of nodes, ends the run on one
malformed reply, aggregates whatever arrived and always counts rounds from 1. Each round here:
  1. waits (up to wait-for-sites-s) until min-sites sites are online, else the run stops naming the offline ones;
  2. asks sites seen for the first time who they are (describe-timeout-s);
  3. train: every online site; the phase closes when all replied or train-timeout-s passed; each reply is
     checked (server_app.rounds.reply_checks); with at least min-sites sound replies carrying weights the strategy
     aggregates them, in site-name order so that a run is reproducible; otherwise the global model stays and the
     reason is recorded (a site whose policy declined or refused the round is filed with its reason);
  4. evaluate: every online site, likewise (evaluate-timeout-s); the pooled evaluation covers the reporting sites;
  5. writes one metrics.jsonl record per site (absent ones included), one rounds.jsonl record, models/latest.pt,
     models/best.pt (server_app.run_record.best_model) and then the round checkpoint (server_app.rounds.round_checkpoint).
Round 0 is step 1, 2 and 4 for the initial model. Weights travel in the run's transport dtype (models.transport):
training replies are checked against the global model's names and shapes with its float arrays in that dtype, and
the strategy (server_app.strategies.transport_dtype.Transport) decodes them. The strategy only configures messages and aggregates, so any
Flower message-API strategy built with ALL_SELECTED can be driven; its state_dict(), if any, is checkpointed.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from logging import ERROR, INFO, WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from models.shared.wire import OutsideLimit, Record, Status, Training, Validation
from models.transport import as_sent
from server_app.coordinator_settings import ServerRunSettings
from server_app.rounds.cross_site import cross_site_matrix
from server_app.rounds.grid_exchange import POLL_S, SelectedNodes, exchange
from server_app.rounds.participation import (
    FROM_SUPERLINK,
    NOT_ONLINE,
    OK,
    SKIPPED,
    PhaseOutcome,
    RoundLedger,
    answer_outcome,
    participation_line,
)
from server_app.rounds.quorum import Presence, QuorumNotReached, online_sites, wait_for_quorum
from server_app.rounds.reply_checks import (
    ArraySpec,
    evaluate_reply_problem,
    in_transport_dtype,
    metric_name_outliers,
    model_spec,
    train_reply_problem,
    training_status,
    validation_status,
)
from server_app.rounds.round_checkpoint import RoundState, save_round_state, strategy_state
from server_app.rounds.secure_aggregation import SecureTrainPhase, mean_reply
from server_app.rounds.secure_sum import weight_caps
from server_app.rounds.site_directory import SiteDirectory
from server_app.run_record.best_model import ended_early, site_scores
from server_app.run_record.checkpoints import Checkpointer
from server_app.run_record.run_folder import COMPLETED, STOPPED, RunFolder

ALL_SELECTED = {
    "fraction_train": 1.0,
    "fraction_evaluate": 1.0,
    "min_train_nodes": 1,
    "min_evaluate_nodes": 1,
    "min_available_nodes": 1,
}
"""Strategy arguments under which Flower's sampler returns exactly the sites this loop selected, at once."""

ROUNDS_FINISHED = "Federated rounds finished"
"""Logged once the last round is done (before the summary and report): what bench/ times a run's end by."""


class EverySiteRefused(RuntimeError):
    """Every online site's gate refused the run's app (not approved there): nothing can train or validate."""

    def __init__(self, sites: list[str]) -> None:
        super().__init__(
            f"every site online refused this app (not approved by the site): {', '.join(sites)}. Nothing to "
            "train; sites approve an app with `oncofed site approve`"
        )


@dataclass(frozen=True)
class Outcome:
    status: str
    last_round: int | None
    """The last round whose results are complete (None: not even round 0)."""
    arrays: ArrayRecord
    reason: str = ""


@dataclass
class FederatedLoop:
    grid: Grid
    strategy: Strategy
    settings: ServerRunSettings
    run: RunFolder
    model_preset: str
    num_rounds: int
    directory: SiteDirectory = field(default_factory=SiteDirectory)
    presence: Presence = field(default_factory=Presence)
    checkpointer: Checkpointer | None = None
    pooled: dict[int, dict] = field(default_factory=dict)
    """Round → pooled validation over the reporting sites."""
    last_round: int | None = None
    """The last round whose results are complete."""
    after_round: Callable[[], None] | None = None
    """Called after each completed round (the ServerApp rewrites summary.json with it)."""
    train_config: ConfigRecord = field(default_factory=ConfigRecord)
    evaluate_config: ConfigRecord = field(default_factory=ConfigRecord)
    transport_dtype: str = "float32"
    """The dtype float weights travel in (run config `transport-dtype`): what a sound training reply holds."""
    record_extras: Callable[[int, str], dict] | None = None
    """(round, site name) → more fields for that site's metrics.jsonl record (bytes on the wire, privacy spent)."""
    saved_model: Callable[[ArrayRecord], ArrayRecord] | None = None
    """The global model as saved in models/ (e.g. whole, in the precision the sites got); default: as it is."""

    def __post_init__(self) -> None:
        if self.checkpointer is None:
            self.checkpointer = Checkpointer(self.run, self.model_preset)

    def run_rounds(self, arrays: ArrayRecord, last_done: int | None) -> Outcome:
        """Rounds after `last_done` (None: start with round 0) up to num_rounds; stops early without quorum."""
        spec = model_spec(arrays)
        self.last_round = last_done
        first = 0 if last_done is None else last_done + 1
        for server_round in range(first, self.num_rounds + 1):
            try:
                arrays = self.round(server_round, arrays, spec)
            except QuorumNotReached as error:
                reason = f"round {server_round} could not start: {error}"
                log(WARNING, "The run stops: %s", reason)
                return Outcome(STOPPED, self.last_round, arrays, reason)
            except EverySiteRefused as error:
                log(ERROR, "The run stops: %s", error)
                return Outcome(STOPPED, self.last_round, arrays, str(error))
            self.last_round = server_round
            if self.after_round is not None:
                self.after_round()
            plateau = self.checkpointer.best.plateau(server_round, self.settings.patience)
            if plateau:
                log(INFO, "The run stops early: %s", plateau)
                break
        last = self.last_round if self.last_round is not None else self.num_rounds
        log(INFO, "%s after round %d", ROUNDS_FINISHED, last)
        cross_site_matrix(
            self.grid,
            self.directory,
            self._online(),
            self.evaluate_config,
            last,
            self.settings.evaluate_timeout_s,
            self.run,
        )
        self.checkpointer.finish(last, self._saved(arrays))
        return Outcome(COMPLETED, last, arrays, ended_early(last, self.num_rounds, self.settings.patience))

    def round(self, server_round: int, arrays: ArrayRecord, spec: dict[str, ArraySpec]) -> ArrayRecord:
        log(INFO, "")
        log(INFO, "[ROUND %s/%s]", server_round, self.num_rounds)
        started = _now()
        ledger = RoundLedger(server_round)
        online = wait_for_quorum(
            self.grid,
            self.directory,
            self.presence,
            min_sites=self.settings.min_sites,
            wait_s=self.settings.wait_for_sites_s,
            expected=self.settings.expected_sites,
        )
        selected = self._described(online, ledger, train_too=server_round > 0)
        if not selected and online and set(online) <= self.directory.refused:
            raise EverySiteRefused(sorted(self.directory.name(node) for node in online))
        names = sorted(
            self.directory.name(n) if self.directory.knows(n) else label for n, label in online.items()
        )
        summary = {"round": server_round, "started_utc": started, "online": names}
        if server_round > 0:
            arrays, summary["train"] = self._train(server_round, arrays, spec, selected, ledger)
        selected = self._described(self._online(), ledger, train_too=False)
        summary["evaluate"] = self._evaluate(server_round, arrays, selected, ledger)

        everyone = self._everyone()
        records = ledger.records(everyone)
        for record in records:
            if self.record_extras is not None:
                record.update(self.record_extras(server_round, record["site"]))
            self.run.append_metrics(record)
        self.run.append_round({**summary, "ended_utc": _now()})
        self.checkpointer(server_round, self._saved(arrays), site_scores(records))
        save_round_state(self.run.path, self.state(server_round, arrays))
        log(INFO, "%s", participation_line(ledger, everyone, self.presence.last_heard_text()))
        return arrays

    def _saved(self, arrays: ArrayRecord) -> ArrayRecord:
        return arrays if self.saved_model is None else self.saved_model(arrays)

    def _online(self) -> dict[int, str]:
        online, identified = online_sites(self.grid, self.directory)
        self.presence.update(identified, datetime.now().timestamp())
        return online

    def _everyone(self) -> set[str]:
        return set(self.settings.expected_sites) | set(self.directory.names) | set(self.presence.last_heard)

    def _described(self, online: dict[int, str], ledger: RoundLedger, *, train_too: bool) -> dict[int, str]:
        """The online nodes that said who they are (node → site); the others are filed with why not."""
        failures = self.directory.describe(self.grid, online, self.settings.describe_timeout_s)
        for node, outcome in failures.items():
            site = ledger.site(online[node])
            site.evaluate = PhaseOutcome(outcome.status, f"not described ({outcome.reason})")
            if train_too:
                site.train = site.evaluate
        return {node: self.directory.name(node) for node in online if self.directory.knows(node)}

    def _collect(
        self,
        server_round: int,
        phase: str,
        messages: list[Message],
        timeout_s: float,
        problem_of,
        poll_s: float = POLL_S,
    ) -> tuple[dict[int, Message], dict[int, PhaseOutcome]]:
        """Send, wait (≤ timeout_s), check: node → sound reply (in site order), node → outcome of the others (a
        site's gate refusing the run's app is filed as a refusal too: SiteDirectory.note_refusal)."""
        answers = exchange(self.grid, messages, timeout_s, poll_s=poll_s)
        heard = datetime.now().timestamp()
        for node, reply in answers.replies.items():
            if reply is not None and not (reply.has_error() and reply.error.code in FROM_SUPERLINK):
                self.presence.heard(self.directory.name(node), heard)  # the site itself answered
        sound, absent = {}, {}
        for message in sorted(messages, key=lambda m: self.directory.name(m.metadata.dst_node_id)):
            node = message.metadata.dst_node_id
            reply = answers.replies.get(node)
            outcome = self.directory.note_refusal(node, reply, server_round) or answer_outcome(
                reply, timeout_s
            )
            if outcome is None and (problem := problem_of(node, reply)):
                outcome = PhaseOutcome(Status.DROPPED, problem)
            if outcome is None:
                sound[node] = reply
            else:
                absent[node] = outcome
        for node, why in metric_name_outliers({n: r.content for n, r in sound.items()}).items():
            absent[node] = PhaseOutcome(Status.DROPPED, why)
            del sound[node]
        for node, outcome in absent.items():
            name = self.directory.name(node)
            if outcome.status == Status.DROPPED:
                log(
                    WARNING,
                    "Round %d: dropping the %s reply of site %s: %s",
                    server_round,
                    phase,
                    name,
                    outcome.reason,
                )
            else:
                log(WARNING, "Round %d: site %s missed %s: %s", server_round, name, phase, outcome.text())
        return sound, absent

    def _absent(self, selected: dict[int, str], ledger: RoundLedger, phase: str) -> None:
        """Sites of the federation not selected for `phase` (and not filed otherwise) were not online."""
        for name in self._everyone() - set(selected.values()):
            site = ledger.site(name)
            if getattr(site, phase) == SKIPPED:
                setattr(site, phase, NOT_ONLINE)

    def _train(
        self,
        server_round: int,
        arrays: ArrayRecord,
        spec: dict[str, ArraySpec],
        selected: dict[int, str],
        ledger: RoundLedger,
    ) -> tuple[ArrayRecord, dict]:
        self._absent(selected, ledger, "train")
        view = SelectedNodes(self.grid, selected)
        messages = (
            list(self.strategy.configure_train(server_round, arrays, self.train_config, view))
            if selected
            else []
        )
        sent_spec = in_transport_dtype(spec, self.transport_dtype)
        if self.settings.strategy.secure_aggregation and messages:
            return self._secure_train(server_round, arrays, spec, selected, ledger, messages)
        sound, absent = self._collect(
            server_round,
            "train",
            messages,
            self.settings.train_timeout_s,
            lambda node, reply: train_reply_problem(
                reply.content, sent_spec, self.directory.usable_cases(node)
            ),
        )
        for node, outcome in absent.items():
            ledger.site(selected[node]).train = outcome
        for node, reply in list(sound.items()):
            if not self._file_training(server_round, ledger, selected[node], reply):
                del sound[node]
        used = [selected[node] for node in sound]
        record = {"asked": sorted(selected[m.metadata.dst_node_id] for m in messages), "sound": used}
        if len(sound) < self.settings.min_sites:
            return arrays, record | self._unchanged(server_round, _too_few_replies(len(sound), self.settings))
        aggregated, _ = self.strategy.aggregate_train(server_round, list(sound.values()))
        if aggregated is None:
            reason = "the strategy returned no model"
            log(WARNING, "Round %d: global model unchanged: %s", server_round, reason)
            return arrays, record | {"aggregated": False, "reason": reason}
        log(INFO, "Round %d: global model updated from %s", server_round, ", ".join(used))
        return conform(aggregated, spec), record | {"aggregated": True, "reason": ""}

    def _file_training(self, server_round: int, ledger: RoundLedger, name: str, reply: Message) -> bool:
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

    def _unchanged(self, server_round: int, reason: str) -> dict:
        log(WARNING, "Round %d: global model unchanged: %s", server_round, reason)
        return {"aggregated": False, "reason": reason}

    def _secure_train(
        self,
        server_round: int,
        arrays: ArrayRecord,
        spec: dict[str, ArraySpec],
        selected: dict[int, str],
        ledger: RoundLedger,
        messages: list[Message],
    ) -> tuple[ArrayRecord, dict]:
        """The training phase under secure aggregation (server_app.rounds.secure_aggregation): the strategy
        aggregates one reply, the unmasked weighted mean of the sites' updates."""
        strategy = self.settings.strategy
        phase = SecureTrainPhase(
            lambda phase, sent, timeout_s, problem_of, poll_s: self._collect(
                server_round, phase, sent, timeout_s, problem_of, poll_s
            ),
            server_round,
            key_timeout_s=self.settings.describe_timeout_s,
            train_timeout_s=self.settings.train_timeout_s,
            norm_bound=strategy.update_norm_bound,
        )
        caps = weight_caps(
            {node: self.directory.usable_cases(node) for node in selected}, strategy.max_site_weight
        )
        sent_spec = in_transport_dtype(spec, self.transport_dtype)
        outcome = phase.run(messages, caps, sent_spec, self.directory.usable_cases)
        for node, absence in outcome.absent.items():
            ledger.site(selected[node]).train = absence
        for node, reply in {**outcome.stopped, **outcome.masked}.items():
            self._file_training(server_round, ledger, selected[node], reply)
        used = [selected[node] for node in sorted(outcome.masked, key=selected.get)]
        record = {"asked": sorted(selected.values()), "sound": used, "secure_aggregation": True}
        if outcome.mean is None:
            return arrays, record | self._unchanged(server_round, outcome.reason)
        if len(outcome.masked) < self.settings.min_sites:
            return arrays, record | self._unchanged(server_round, _too_few_replies(len(used), self.settings))
        sent = {name: array.numpy() for name, array in as_sent(arrays, self.transport_dtype).items()}
        aggregated, _ = self.strategy.aggregate_train(server_round, [mean_reply(outcome, sent, messages[0])])
        if aggregated is None:
            return arrays, record | self._unchanged(server_round, "the strategy returned no model")
        log(INFO, "Round %d: global model updated from the masked sum of %s", server_round, ", ".join(used))
        return conform(aggregated, spec), record | {"aggregated": True, "reason": ""}

    def _evaluate(
        self, server_round: int, arrays: ArrayRecord, selected: dict[int, str], ledger: RoundLedger
    ) -> dict:
        self._absent(selected, ledger, "evaluate")
        view = SelectedNodes(self.grid, selected)
        messages = (
            list(self.strategy.configure_evaluate(server_round, arrays, self.evaluate_config, view))
            if selected
            else []
        )
        sound, absent = self._collect(
            server_round,
            "evaluate",
            messages,
            self.settings.evaluate_timeout_s,
            lambda node, reply: evaluate_reply_problem(reply.content, self.directory.usable_cases(node)),
        )
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

    def state(self, server_round: int, arrays: ArrayRecord) -> RoundState:
        return RoundState(
            round=server_round,
            arrays=arrays,
            model_preset=self.model_preset,
            strategy_state=strategy_state(self.strategy),
            best=self.checkpointer.best.state(),
            sites=self.directory.state(),
            presence=self.presence.state(),
            pooled=dict(self.pooled),
        )


def conform(arrays: ArrayRecord, spec: dict[str, ArraySpec]) -> ArrayRecord:
    """The aggregate in the global model's dtypes (FedAvg returns integer arrays as float64), in its order."""
    return ArrayRecord(
        {
            name: Array(np.asarray(arrays[name].numpy(), dtype=expected.dtype))
            for name, expected in spec.items()
        }
    )


def _too_few_replies(count: int, settings: ServerRunSettings) -> str:
    return f"{count} sound training {'reply' if count == 1 else 'replies'}, fewer than min-sites {settings.min_sites}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
