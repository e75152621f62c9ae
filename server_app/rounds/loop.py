"""The coordinator's rounds, one job: quorum, per-phase deadlines, checked replies, named absences, a checkpoint per round.

Replaces Flower's `Strategy.start`, which waits without a deadline for its minimum of nodes, ends the run on one
malformed reply, aggregates whatever arrived and always counts rounds from 1. Each round here:
  1. waits (up to wait-for-sites-s) until min-sites sites are online, else the run stops naming the offline ones;
  2. asks sites seen for the first time who they are (describe-timeout-s);
  3. train: every online site; the phase closes when all replied or train-timeout-s passed; each reply is
     checked (server_app.rounds.reply_checks, through server_app.rounds.phase_replies); with at least min-sites
     sound replies carrying weights the strategy aggregates them, in site-name order so that a run is
     reproducible; otherwise the global model stays and the reason is recorded (a site whose policy declined or
     refused the round is filed with its reason); under secure-aggregation: server_app.rounds.secure_aggregation;
  4. evaluate: every online site, likewise (evaluate-timeout-s); the pooled evaluation covers the reporting sites;
  5. writes one metrics.jsonl record per site (absent ones included), one rounds.jsonl record, models/latest.pt,
     models/best.pt (server_app.run_record.best_model) and then the round checkpoint (server_app.rounds.round_checkpoint).
With `round-messages` one (the default; not under secure-aggregation), steps 3 and 4 travel in one message per
site: round r's train instruction carries the model round r − 1 ended with and asks for its validation too
(models.shared.wire.EVALUATE_ROUND); one reply holds both (models.shared.round_reply), each part checked and filed
as its own phase, the validation under round r − 1, whose step 5 then runs; round r stays pending until then
(server_app.rounds.pending_round, kept in the checkpoint written after each message). Round 0's validation rides
on round 1's message; after the last round one evaluate message per site. The deadline of such a message is
train-timeout-s + evaluate-timeout-s. An early stop at round r discards round r + 1, already trained.
Round 0 is step 1, 2 and 4 for the initial model. Weights travel in the run's transport dtype (models.transport):
training replies are checked against the global model's names and shapes with its float arrays in that dtype, and
the strategy (server_app.strategies.transport_dtype.Transport) decodes them. The strategy only configures messages and aggregates, so any
Flower message-API strategy built with ALL_SELECTED can be driven; its state_dict(), if any, is checkpointed.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from logging import ERROR, INFO, WARNING

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from models.shared.round_reply import split_round_reply, validation_failure
from models.shared.wire import EVALUATE_ROUND, Status
from server_app.coordinator_settings import ServerRunSettings
from server_app.rounds.cross_site import cross_site_matrix
from server_app.rounds.grid_exchange import SelectedNodes
from server_app.rounds.participation import (
    NOT_ONLINE,
    SKIPPED,
    PhaseOutcome,
    RoundLedger,
    participation_line,
)
from server_app.rounds.pending_round import PendingRound
from server_app.rounds.phase_filing import PhaseFiling
from server_app.rounds.phase_replies import PhaseReplies
from server_app.rounds.quorum import Presence, QuorumNotReached, online_sites, wait_for_quorum
from server_app.rounds.reply_checks import (
    ArraySpec,
    evaluate_reply_problem,
    in_transport_dtype,
    model_spec,
    train_reply_problem,
)
from server_app.rounds.round_checkpoint import RoundState, save_round_state, strategy_state
from server_app.rounds.secure_aggregation import secure_train
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
    pending: PendingRound | None = None
    """A resumed run's round trained before the coordinator stopped, its validation not yet filed."""
    _latest: ArrayRecord | None = field(default=None, init=False)
    """The global model the round checkpoint holds: what a stopped run continues from."""
    _opening: int = field(default=0, init=False)
    """The round being started (named when it cannot start)."""

    def __post_init__(self) -> None:
        self.replies = PhaseReplies(self.grid, self.directory, self.presence)
        self.filing = PhaseFiling(self.strategy, self.settings.min_sites, self.pooled)
        if self.checkpointer is None:
            self.checkpointer = Checkpointer(self.run, self.model_preset)

    def run_rounds(self, arrays: ArrayRecord, last_done: int | None) -> Outcome:
        """Rounds after `last_done` (None: start with round 0) up to num_rounds; stops early without quorum."""
        spec = model_spec(arrays)
        self.last_round, self._latest = last_done, arrays
        rounds = self._one_message_rounds if self.settings.one_message else self._two_message_rounds
        try:
            arrays = rounds(arrays, spec)
        except QuorumNotReached as error:
            reason = f"round {self._opening} could not start: {error}"
            log(WARNING, "The run stops: %s", reason)
            return Outcome(STOPPED, self.last_round, self._latest, reason)
        except EverySiteRefused as error:
            log(ERROR, "The run stops: %s", error)
            return Outcome(STOPPED, self.last_round, self._latest, str(error))
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

    def _two_message_rounds(self, arrays: ArrayRecord, spec: dict[str, ArraySpec]) -> ArrayRecord:
        """Each round a train message (from round 1) and then an evaluate message to every online site."""
        if self.pending is not None:  # resumed from a run that sent one message per round: validate its last
            arrays, pending, self.pending = self.pending.arrays, self.pending, None
            self._validate_only(pending)
            if self._stops(pending.round):
                return arrays
        first = 0 if self.last_round is None else self.last_round + 1
        for server_round in range(first, self.num_rounds + 1):
            arrays = self.round(server_round, arrays, spec)
            if self._stops(server_round):
                break
        return arrays

    def _one_message_rounds(self, arrays: ArrayRecord, spec: dict[str, ArraySpec]) -> ArrayRecord:
        """Each round one train message to every online site, carrying the validation of the round before (round
        0's rides on round 1's); after the last round one evaluate message. A round's results are complete, and
        filed under its own number, when its validation arrives; an early stop discards the round trained since."""
        pending = self.pending
        if pending is None and self.last_round is None:
            pending = PendingRound(0, RoundLedger(0), {"round": 0, "started_utc": _now()}, arrays)
        first = (pending.round if pending is not None else self.last_round) + 1
        for server_round in range(first, self.num_rounds + 1):
            evaluated = pending
            pending = self._train_and_validate(server_round, arrays, evaluated, spec)
            arrays = pending.arrays
            if evaluated is not None and self._stops(evaluated.round):
                return evaluated.arrays
        if pending is not None:
            self._validate_only(pending)
            self._stops(pending.round)
            arrays = pending.arrays
        return arrays

    def _stops(self, server_round: int) -> bool:
        """After round `server_round`'s results are filed: summary.json, then whether the run stops early."""
        if self.after_round is not None:
            self.after_round()
        plateau = self.checkpointer.best.plateau(server_round, self.settings.patience)
        if plateau:
            log(INFO, "The run stops early: %s", plateau)
        return bool(plateau)

    def round(self, server_round: int, arrays: ArrayRecord, spec: dict[str, ArraySpec]) -> ArrayRecord:
        """One round of two messages per site: train (from round 1), then evaluate the aggregate."""
        ledger = RoundLedger(server_round)
        selected, summary = self._open(ledger, train=server_round > 0, validating=ledger)
        if server_round > 0:
            arrays, summary["train"] = self._train(server_round, arrays, spec, selected, ledger)
        self._validate_only(PendingRound(server_round, ledger, summary, arrays))
        return arrays

    def _train_and_validate(
        self,
        server_round: int,
        arrays: ArrayRecord,
        evaluated: PendingRound | None,
        spec: dict[str, ArraySpec],
    ) -> PendingRound:
        """Round `server_round`'s one message per site: the train instruction on `arrays`, also asking for the
        validation of `arrays` as round `evaluated`'s (None: nothing left to validate), whose results are then
        complete. Returns the round just trained, its validation pending."""
        ledger = RoundLedger(server_round)
        selected, summary = self._open(
            ledger, train=True, validating=evaluated.ledger if evaluated is not None else None
        )
        self._absent(selected, ledger, "train")
        config = ConfigRecord(dict(self.train_config))
        if evaluated is not None:
            evaluated.summary.setdefault("online", summary["online"])
            self._absent(selected, evaluated.ledger, "evaluate")
            config[EVALUATE_ROUND] = evaluated.round
        view = SelectedNodes(self.grid, selected)
        messages = list(self.strategy.configure_train(server_round, arrays, config, view)) if selected else []
        timeout_s = self.settings.train_timeout_s + self.settings.evaluate_timeout_s
        replies, missing = self.replies.answers(server_round, messages, timeout_s)
        parts = {node: split_round_reply(reply.content) for node, reply in replies.items()}
        if evaluated is not None:
            failed = {
                node: PhaseOutcome(Status.FAILED, reason)
                for node, (_, part) in parts.items()
                if (reason := validation_failure(part)) is not None
            }
            sound, absent = self.replies.checked(
                evaluated.round,
                "evaluate",
                {n: _with_content(replies[n], part) for n, (_, part) in parts.items() if n not in failed},
                {**missing, **failed},
                self._evaluate_problem,
            )
            evaluated.summary["evaluate"] = self.filing.evaluation(
                evaluated.round, selected, evaluated.ledger, messages, sound, absent
            )
            replies = {node: _with_content(replies[node], part) for node, (part, _) in parts.items()}
        sound, absent = self.replies.checked(
            server_round, "train", replies, missing, self._train_problem(spec)
        )
        trained, summary["train"] = self.filing.training(
            server_round, arrays, spec, selected, ledger, messages, sound, absent
        )
        pending = PendingRound(server_round, ledger, summary, trained)
        closed = self._close(evaluated) if evaluated is not None else None
        save_round_state(self.run.path, self.state(server_round - 1, trained, pending))
        self._latest = trained
        if closed is not None:
            log(INFO, "%s", closed)
        return pending

    def _open(
        self, ledger: RoundLedger, *, train: bool, validating: RoundLedger | None
    ) -> tuple[dict[int, str], dict]:
        """Start round `ledger.round`: the quorum, the sites described (the others filed under its training when
        `train` and under `validating`'s evaluation), its rounds.jsonl summary so far."""
        server_round = self._opening = ledger.round
        log(INFO, "")
        log(INFO, "[ROUND %s/%s]", server_round, self.num_rounds)
        started = _now()
        online = wait_for_quorum(
            self.grid,
            self.directory,
            self.presence,
            min_sites=self.settings.min_sites,
            wait_s=self.settings.wait_for_sites_s,
            expected=self.settings.expected_sites,
        )
        selected = self._described(online, train=ledger if train else None, evaluate=validating)
        if not selected and online and set(online) <= self.directory.refused:
            raise EverySiteRefused(sorted(self.directory.name(node) for node in online))
        names = sorted(
            self.directory.name(n) if self.directory.knows(n) else label for n, label in online.items()
        )
        return selected, {"round": server_round, "started_utc": started, "online": names}

    def _validate_only(self, pending: PendingRound) -> None:
        """An evaluate message to every online site for `pending`'s model; its results are then complete."""
        selected = self._described(self._online(), train=None, evaluate=pending.ledger)
        pending.summary["evaluate"] = self._evaluate(pending.round, pending.arrays, selected, pending.ledger)
        closed = self._close(pending)
        save_round_state(self.run.path, self.state(pending.round, pending.arrays))
        self._latest = pending.arrays
        log(INFO, "%s", closed)

    def _close(self, done: PendingRound) -> str:
        """A round's results: one metrics.jsonl record per site, its rounds.jsonl record, latest.pt / best.pt;
        returns its participation line, which the caller logs once the round checkpoint is written."""
        everyone = self._everyone()
        records = done.ledger.records(everyone)
        for record in records:
            if self.record_extras is not None:
                record.update(self.record_extras(done.round, record["site"]))
            self.run.append_metrics(record)
        self.run.append_round({**done.summary, "ended_utc": _now()})
        self.checkpointer(done.round, self._saved(done.arrays), site_scores(records))
        self.last_round = done.round
        return participation_line(done.ledger, everyone, self.presence.last_heard_text())

    def _saved(self, arrays: ArrayRecord) -> ArrayRecord:
        return arrays if self.saved_model is None else self.saved_model(arrays)

    def _online(self) -> dict[int, str]:
        online, identified = online_sites(self.grid, self.directory)
        self.presence.update(identified, datetime.now().timestamp())
        return online

    def _everyone(self) -> set[str]:
        return set(self.settings.expected_sites) | set(self.directory.names) | set(self.presence.last_heard)

    def _described(
        self, online: dict[int, str], *, train: RoundLedger | None, evaluate: RoundLedger | None
    ) -> dict[int, str]:
        """The online nodes that said who they are (node → site); the others are filed with why not, under
        `train`'s training and `evaluate`'s evaluation."""
        failures = self.directory.describe(self.grid, online, self.settings.describe_timeout_s)
        for node, outcome in failures.items():
            missed = PhaseOutcome(outcome.status, f"not described ({outcome.reason})")
            if evaluate is not None:
                evaluate.site(online[node]).evaluate = missed
            if train is not None:
                train.site(online[node]).train = missed
        return {node: self.directory.name(node) for node in online if self.directory.knows(node)}

    def _train_problem(self, spec: dict[str, ArraySpec]):
        """What is wrong with a train reply (reply_checks.train_reply_problem), in the transport dtype."""
        sent_spec = in_transport_dtype(spec, self.transport_dtype)
        return lambda node, reply: train_reply_problem(
            reply.content, sent_spec, self.directory.usable_cases(node)
        )

    def _evaluate_problem(self, node: int, reply: Message) -> str | None:
        return evaluate_reply_problem(reply.content, self.directory.usable_cases(node))

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
        if self.settings.strategy.secure_aggregation and messages:
            return secure_train(self, server_round, arrays, spec, selected, ledger, messages)
        sound, absent = self.replies.collect(
            server_round, "train", messages, self.settings.train_timeout_s, self._train_problem(spec)
        )
        return self.filing.training(server_round, arrays, spec, selected, ledger, messages, sound, absent)

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
        sound, absent = self.replies.collect(
            server_round, "evaluate", messages, self.settings.evaluate_timeout_s, self._evaluate_problem
        )
        return self.filing.evaluation(server_round, selected, ledger, messages, sound, absent)

    def state(
        self, server_round: int, arrays: ArrayRecord, pending: PendingRound | None = None
    ) -> RoundState:
        """The round checkpoint after round `server_round`'s results (and `pending`, trained since)."""
        return RoundState(
            round=server_round,
            arrays=arrays,
            model_preset=self.model_preset,
            strategy_state=strategy_state(self.strategy),
            best=self.checkpointer.best.state(),
            sites=self.directory.state(),
            presence=self.presence.state(),
            pooled=dict(self.pooled),
            pending=pending.state() if pending is not None else None,
        )


def _with_content(reply: Message, content: RecordDict) -> Message:
    """`reply` with other content: one part of a reply that answered two phases."""
    return Message(metadata=reply.metadata, content=content)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
