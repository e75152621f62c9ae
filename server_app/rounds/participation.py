"""Who took part in a round, and for those who did not, why — one metrics.jsonl record per site per round.

A site's part in a phase (describe, train, evaluate) ends in one outcome (statuses from models.shared.wire):
  ok                   it replied, the reply passed the checks (server_app.rounds.reply_checks) and carries what was asked
  declined, refused    train: its policy stopped it (too few training cases; a run setting outside its limits)
  suppressed, refused  evaluate: its policy let no number leave (too few validation cases, …; outside its limits)
  offline              not online when the phase started, or Flower reported it unavailable (no heartbeat)
  timeout              no reply by the phase deadline
  failed               it replied with an error (the site's log has the details; only the error type is sent)
  dropped              its reply failed a check; `reason` says which
  not-asked            the phase did not involve it (round 0 has no training)
A policy outcome is the site's decision and its reply arrived; the last four (models.shared.wire.ABSENT_STATUSES) are a
missing or unusable reply. A record's `status` is the validation's (reported, suppressed, refused) when its
evaluate reply arrived, else the absence of the first phase that went wrong; `reason` is the site's own reason for
sending no numbers, else the first phase that went wrong and why; `participation` holds each phase's outcome.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

from flwr.app import Message
from flwr.common.constant import ErrorCode

from models.shared.wire import (
    ABSENT_STATUSES,
    NUM_EXAMPLES,
    OutsideLimit,
    Record,
    Status,
    Validation,
)
from server_app.rounds.reply_checks import validation_status

EXPIRED = (ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE)
FROM_SUPERLINK = (ErrorCode.NODE_UNAVAILABLE, *EXPIRED)
"""Error replies the SuperLink makes for a site that did not answer (the site itself sent nothing)."""


@dataclass(frozen=True)
class PhaseOutcome:
    status: Status
    reason: str = ""

    def text(self) -> str:
        return f"{self.status}: {self.reason}" if self.reason else str(self.status)


NOT_ONLINE = PhaseOutcome(Status.OFFLINE, "not online when the phase started")
SKIPPED = PhaseOutcome(Status.NOT_ASKED)
OK = PhaseOutcome(Status.TOOK_PART)


def answer_outcome(reply: Message | None, timeout_s: float) -> PhaseOutcome | None:
    """The outcome of a missing or error reply; None for a reply with content (the caller checks it)."""
    if reply is None:
        return PhaseOutcome(Status.TIMEOUT, f"no reply within {timeout_s:g} s")
    if not reply.has_error():
        return None
    if reply.error.code == ErrorCode.NODE_UNAVAILABLE:
        return PhaseOutcome(
            Status.OFFLINE, "lost contact during the phase (no heartbeat: Flower's node unavailable)"
        )
    if reply.error.code in EXPIRED:
        return PhaseOutcome(Status.TIMEOUT, f"no reply within {timeout_s:g} s (the message expired)")
    return PhaseOutcome(Status.FAILED, str(reply.error.reason or f"error code {reply.error.code}"))


@dataclass
class SiteRound:
    """One site's round as it happened."""

    train: PhaseOutcome = SKIPPED
    evaluate: PhaseOutcome = SKIPPED
    train_metrics: dict | None = None
    """Its training metrics, or the status and reason (and the OutsideLimit fields of a refusal) of a training
    its policy declined or refused."""
    evaluation: Message | None = None
    """Its sound evaluate reply (reported, suppressed or refused)."""

    @classmethod
    def never_seen(cls, server_round: int) -> "SiteRound":
        """A site of the federation that was not online for any phase of the round."""
        return cls(evaluate=NOT_ONLINE, train=SKIPPED if server_round == 0 else NOT_ONLINE)

    def first_absence(self) -> tuple[str, PhaseOutcome] | None:
        """The first phase whose reply did not arrive or was unusable (models.shared.wire.ABSENT_STATUSES)."""
        phases = (("train", self.train), ("evaluate", self.evaluate))
        return next(((phase, o) for phase, o in phases if o.status in ABSENT_STATUSES), None)


@dataclass
class RoundLedger:
    """Collects each site's outcomes during a round; `records` turns them into metrics.jsonl records."""

    round: int
    sites: dict[str, SiteRound] = field(default_factory=dict)

    def site(self, name: str) -> SiteRound:
        return self.sites.setdefault(name, SiteRound())

    def everyone(self, all_sites: Iterable[str]) -> dict[str, SiteRound]:
        """Every site of the federation (those never seen included, as offline), by site name."""
        names = sorted(set(all_sites) | set(self.sites))
        return {name: self.sites.get(name) or SiteRound.never_seen(self.round) for name in names}

    def records(self, all_sites: Iterable[str]) -> list[dict]:
        """One record per site of the federation, sorted by site."""
        return [_record(self.round, name, site) for name, site in self.everyone(all_sites).items()]


def _record(server_round: int, name: str, site: SiteRound) -> dict:
    record = {
        "round": server_round,
        "site": name,
        "participation": {"train": site.train.text(), "evaluate": site.evaluate.text()},
        "train": site.train_metrics,
        "withheld": [],
        "min_report_cases": None,
        "n_cases": None,
        "metrics": {},
        "conventions": {},
        "outside_limit": None,
    }
    wrong = site.first_absence()
    absence = f"{wrong[0]}: {wrong[1].reason}" if wrong else ""
    if site.evaluation is None:
        return record | {"status": wrong[1].status if wrong else Status.OFFLINE, "reason": absence}
    content = site.evaluation.content
    validation = dict(content.config_records.get(Record.VALIDATION, {}))
    metrics = dict(content.metric_records.get(Record.METRICS, {}))
    own_reason = validation.pop(Validation.REASON, None)
    outside = OutsideLimit.from_record(validation)
    for key in OutsideLimit.KEYS:
        validation.pop(key, None)
    return record | {
        "status": validation_status(content),
        "reason": own_reason or absence,
        "withheld": list(validation.pop(Validation.WITHHELD, [])),
        "min_report_cases": validation.pop(Validation.MIN_REPORT_CASES, None),
        "n_cases": int(metrics.pop(NUM_EXAMPLES)) if metrics else None,
        "metrics": metrics,
        "conventions": {k: v for k, v in validation.items() if k != Validation.STATUS},
        "outside_limit": outside.fields() if outside else None,
    }


PHASES = (("train", "train"), ("validate", "evaluate"))
"""The round's phases as the terminal names them, and their SiteRound fields."""


def participation_line(ledger: RoundLedger, all_sites: Iterable[str], last_heard: dict[str, str]) -> str:
    """ "round 3: 2 of 3 sites; hospital-c train offline (last heard at 14:02:31), validate reported" — the
    coordinator's terminal shows after a round.

    From round 1 on a site took part when its training reply was used (round 0: when its validation reply
    arrived). Every site with a phase that did not go as asked is named with each phase of the round (train and
    validate; round 0 only validates) and its outcome: its own policy, or a missing or dropped reply; an offline
    site with when the coordinator last heard from it (`last_heard`: site → time) when it did in this run."""
    sites = ledger.everyone(all_sites)
    took_part, notes = 0, []
    for name, site in sites.items():
        counted = site.evaluation is not None if ledger.round == 0 else site.train == OK
        took_part += counted
        phases = PHASES[1:] if ledger.round == 0 else PHASES
        outcomes = [(word, getattr(site, field)) for word, field in phases]
        if any(outcome != OK for _, outcome in outcomes):
            notes.append(f"{name} {_phases_text(outcomes, last_heard.get(name))}")
    line = f"round {ledger.round}: {took_part} of {len(sites)} sites"
    return line + (f"; {'; '.join(notes)}" if notes else "")


def _phases_text(outcomes: list[tuple[str, PhaseOutcome]], last_heard: str | None) -> str:
    """ "train offline (last heard at 14:02:31), validate reported"; phases with one outcome share it."""
    texts = [(word, _outcome_text(word, outcome, last_heard)) for word, outcome in outcomes]
    if len(texts) > 1 and len({text for _, text in texts}) == 1:
        return f"{' and '.join(word for word, _ in texts)} {texts[0][1]}"
    return ", ".join(f"{word} {text}" for word, text in texts)


def _outcome_text(word: str, outcome: PhaseOutcome, last_heard: str | None) -> str:
    if outcome == OK:
        return "reported" if word == "validate" else "ok"
    if outcome.status == Status.OFFLINE and last_heard is not None:
        return f"offline (last heard at {last_heard})"
    return f"{outcome.status} ({outcome.reason})" if outcome.reason else str(outcome.status)
