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

from dataclasses import dataclass, field

from flwr.app import Message
from flwr.common.constant import ErrorCode

from models.shared.wire import (
    ABSENT_STATUSES,
    EVALUATE_STATUSES,
    FAILED,
    NOT_ASKED,
    NUM_EXAMPLES,
    OFFLINE,
    REPORTED,
    TIMEOUT,
    TOOK_PART,
    Record,
    Validation,
)
from server_app.rounds.reply_checks import validation_status

EXPIRED = (ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE)


@dataclass(frozen=True)
class PhaseOutcome:
    status: str
    reason: str = ""

    def text(self) -> str:
        return f"{self.status}: {self.reason}" if self.reason else self.status


NOT_ONLINE = PhaseOutcome(OFFLINE, "not online when the phase started")
SKIPPED = PhaseOutcome(NOT_ASKED)
OK = PhaseOutcome(TOOK_PART)


def answer_outcome(reply: Message | None, timeout_s: float) -> PhaseOutcome | None:
    """The outcome of a missing or error reply; None for a reply with content (the caller checks it)."""
    if reply is None:
        return PhaseOutcome(TIMEOUT, f"no reply within {timeout_s:g} s")
    if not reply.has_error():
        return None
    if reply.error.code == ErrorCode.NODE_UNAVAILABLE:
        return PhaseOutcome(
            OFFLINE, "lost contact during the phase (no heartbeat: Flower's node unavailable)"
        )
    if reply.error.code in EXPIRED:
        return PhaseOutcome(TIMEOUT, f"no reply within {timeout_s:g} s (the message expired)")
    return PhaseOutcome(FAILED, str(reply.error.reason or f"error code {reply.error.code}"))


@dataclass
class SiteRound:
    """One site's round as it happened."""

    train: PhaseOutcome = SKIPPED
    evaluate: PhaseOutcome = SKIPPED
    train_metrics: dict | None = None
    """Its training metrics, or the status and reason of a training its policy declined or refused."""
    evaluation: Message | None = None
    """Its sound evaluate reply (reported, suppressed or refused)."""


@dataclass
class RoundLedger:
    """Collects each site's outcomes during a round; `records` turns them into metrics.jsonl records."""

    round: int
    sites: dict[str, SiteRound] = field(default_factory=dict)

    def site(self, name: str) -> SiteRound:
        return self.sites.setdefault(name, SiteRound())

    def records(self, all_sites: list[str] | set[str]) -> list[dict]:
        """One record per site of the federation (those never seen included, as offline), sorted by site."""
        return [
            _record(self.round, name, self.sites.get(name))
            for name in sorted(set(all_sites) | set(self.sites))
        ]


def _record(server_round: int, name: str, site: SiteRound | None) -> dict:
    site = site or SiteRound(evaluate=NOT_ONLINE, train=SKIPPED if server_round == 0 else NOT_ONLINE)
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
    }
    wrong = next(
        (
            (phase, outcome)
            for phase, outcome in (("train", site.train), ("evaluate", site.evaluate))
            if outcome.status in ABSENT_STATUSES
        ),
        None,
    )
    absence = f"{wrong[0]}: {wrong[1].reason}" if wrong else ""
    if site.evaluation is None:
        return record | {"status": wrong[1].status if wrong else OFFLINE, "reason": absence}
    content = site.evaluation.content
    validation = dict(content.config_records.get(Record.VALIDATION, {}))
    metrics = dict(content.metric_records.get(Record.METRICS, {}))
    own_reason = validation.pop(Validation.REASON, None)
    return record | {
        "status": validation_status(content),
        "reason": own_reason or absence,
        "withheld": list(validation.pop(Validation.WITHHELD, [])),
        "min_report_cases": validation.pop(Validation.MIN_REPORT_CASES, None),
        "n_cases": int(metrics.pop(NUM_EXAMPLES)) if metrics else None,
        "metrics": metrics,
        "conventions": {k: v for k, v in validation.items() if k != Validation.STATUS},
    }


def participation_line(server_round: int, records: list[dict], offline_since: dict[str, str]) -> str:
    """ "round 3: 2 of 3 sites; hospital-c offline since 14:02" — what the coordinator's terminal shows.

    From round 1 on a site took part when its training reply was used (round 0: when its validation reply
    arrived); each other site is named with what kept it out (its own policy, or a missing or dropped reply)."""
    took_part, notes = 0, []
    for r in records:
        if server_round == 0:
            if r["status"] in EVALUATE_STATUSES:
                took_part += 1
                if r["status"] != REPORTED:
                    notes.append(f"{r['site']} {r['status']} ({r.get('reason') or 'no reason given'})")
                continue
            phase = r["participation"]["evaluate"]
        else:
            phase = r["participation"]["train"]
            if phase == TOOK_PART:
                took_part += 1
                if r["status"] in ABSENT_STATUSES:  # trained, but its validation did not arrive
                    notes.append(f"{r['site']} validation {r['participation']['evaluate']}")
                continue
        status, _, why = phase.partition(": ")
        if status == OFFLINE and r["site"] in offline_since:
            notes.append(f"{r['site']} offline since {offline_since[r['site']]}")
        else:
            notes.append(f"{r['site']} {status} ({why})" if why else f"{r['site']} {status}")
    line = f"round {server_round}: {took_part} of {len(records)} sites"
    return line + (f"; {'; '.join(notes)}" if notes else "")
