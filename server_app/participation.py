"""Who took part in a round, and for those who did not, why — one metrics.jsonl record per site per round.

A site's part in a phase (describe, train, evaluate) ends in one outcome:
  ok         it replied and the reply passed the checks (server_app.reply_checks)
  offline    not online when the phase started, or Flower reported it unavailable (no heartbeat)
  timeout    no reply by the phase deadline
  failed     it replied with an error (the site's log has the details; only the error type is sent)
  dropped    its reply failed a check; `reason` says which
  not-asked  the phase did not involve it (round 0 has no training)
A record's `status` is "reported" or "suppressed" when its validation arrived, else the outcome of the first phase
that went wrong; `reason` names the first phase that went wrong and why (also when the validation arrived, e.g. a
training reply that was dropped); `participation` holds each phase's outcome.
"""

from dataclasses import dataclass, field

from flwr.app import Message
from flwr.common.constant import ErrorCode

from server_app.reply_checks import METRICS_RECORD, VALIDATION_RECORD, WEIGHT_KEY, validation_status

OK, OFFLINE, TIMEOUT, FAILED, DROPPED, NOT_ASKED = (
    "ok",
    "offline",
    "timeout",
    "failed",
    "dropped",
    "not-asked",
)
ABSENT = (OFFLINE, TIMEOUT, FAILED, DROPPED)
"""The record statuses of a site whose validation did not arrive."""

EXPIRED = (ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE)


@dataclass(frozen=True)
class PhaseOutcome:
    status: str
    reason: str = ""

    def text(self) -> str:
        return f"{self.status}: {self.reason}" if self.reason else self.status


NOT_ONLINE = PhaseOutcome(OFFLINE, "not online when the phase started")
SKIPPED = PhaseOutcome(NOT_ASKED)


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
    evaluation: Message | None = None
    """Its sound evaluate reply."""


@dataclass
class RoundLedger:
    """Collects each site's outcomes during a round; `records` turns them into metrics.jsonl records."""

    round: int
    sites: dict[str, SiteRound] = field(default_factory=dict)

    def site(self, name: str) -> SiteRound:
        return self.sites.setdefault(name, SiteRound())

    def records(self, all_sites: list[str]) -> list[dict]:
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
        "min_report_cases": None,
        "n_cases": None,
        "metrics": {},
        "conventions": {},
    }
    wrong = next(
        (
            (phase, outcome)
            for phase, outcome in (("train", site.train), ("evaluate", site.evaluate))
            if outcome.status in ABSENT
        ),
        None,
    )
    record["reason"] = f"{wrong[0]}: {wrong[1].reason}" if wrong else ""
    if site.evaluation is None:
        return record | {"status": wrong[1].status if wrong else OFFLINE}
    content = site.evaluation.content
    validation = dict(content.config_records.get(VALIDATION_RECORD, {}))
    metrics = dict(content.metric_records.get(METRICS_RECORD, {}))
    return record | {
        "status": validation_status(content),
        "min_report_cases": validation.pop("min-report-cases", None),
        "n_cases": int(metrics.pop(WEIGHT_KEY)) if metrics else None,
        "metrics": metrics,
        "conventions": {k: v for k, v in validation.items() if k != "status"},
    }


def participation_line(server_round: int, records: list[dict], offline_since: dict[str, str]) -> str:
    """ "round 3: 2 of 3 sites; hospital-c offline since 14:02" — what the coordinator's terminal shows.

    From round 1 on a site took part when its training reply was used (round 0: when its validation arrived);
    each other site is named with what kept it out."""
    took_part, notes = 0, []
    for r in records:
        phase = r["participation"]["train" if server_round else "evaluate"]
        if phase == OK:
            took_part += 1
            if r["status"] in ABSENT:  # trained, but its validation did not arrive
                notes.append(f"{r['site']} validation {r['participation']['evaluate']}")
            continue
        status, _, why = phase.partition(": ")
        if status == OFFLINE and r["site"] in offline_since:
            notes.append(f"{r['site']} offline since {offline_since[r['site']]}")
        else:
            notes.append(f"{r['site']} {status} ({why})" if why else f"{r['site']} {status}")
    line = f"round {server_round}: {took_part} of {len(records)} sites"
    return line + (f"; {'; '.join(notes)}" if notes else "")
