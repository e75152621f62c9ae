"""A phase's replies sorted for the round loop: sent and awaited by a deadline, then sound or named absent.

Each reply is matched to its node (server_app.rounds.grid_exchange); a missing or error reply gets its outcome
(server_app.rounds.participation; a site's gate refusing the run's app is filed as a refusal:
SiteDirectory.note_refusal); the others are checked (server_app.rounds.reply_checks, and their metric names
against the other sites'); every absence is logged with the site and the phase it missed. Sending and checking
are separate steps so that one reply answering two phases (one message per round) is checked as each.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from logging import WARNING

from flwr.app import Message
from flwr.common.logger import log
from flwr.serverapp import Grid

from models.shared.wire import Status
from server_app.rounds.grid_exchange import POLL_S, exchange
from server_app.rounds.participation import FROM_SUPERLINK, PhaseOutcome, answer_outcome
from server_app.rounds.quorum import Presence
from server_app.rounds.reply_checks import metric_name_outliers
from server_app.rounds.site_directory import SiteDirectory

ProblemOf = Callable[[int, Message], str | None]
"""(node, reply) → why the reply is unusable, or None."""


@dataclass
class PhaseReplies:
    """Sends a phase's messages on `grid` and sorts the replies; `presence` learns who answered."""

    grid: Grid
    directory: SiteDirectory
    presence: Presence

    def collect(
        self,
        server_round: int,
        phase: str,
        messages: list[Message],
        timeout_s: float,
        problem_of: ProblemOf,
        poll_s: float = POLL_S,
    ) -> tuple[dict[int, Message], dict[int, PhaseOutcome]]:
        """Send, wait (≤ timeout_s), check: node → sound reply (in site order), node → outcome of the others."""
        replies, missing = self.answers(server_round, messages, timeout_s, poll_s)
        return self.checked(server_round, phase, replies, missing, problem_of)

    def answers(
        self, server_round: int, messages: list[Message], timeout_s: float, poll_s: float = POLL_S
    ) -> tuple[dict[int, Message], dict[int, PhaseOutcome]]:
        """Send, wait (≤ timeout_s): node → reply with content, node → outcome of a missing or error reply (a
        site's gate refusing the run's app is filed as a refusal too: SiteDirectory.note_refusal)."""
        answers = exchange(self.grid, messages, timeout_s, poll_s=poll_s)
        heard = datetime.now().timestamp()
        for node, reply in answers.replies.items():
            if reply is not None and not (reply.has_error() and reply.error.code in FROM_SUPERLINK):
                self.presence.heard(self.directory.name(node), heard)  # the site itself answered
        replies, missing = {}, {}
        for message in messages:
            node = message.metadata.dst_node_id
            reply = answers.replies.get(node)
            outcome = self.directory.note_refusal(node, reply, server_round) or answer_outcome(
                reply, timeout_s
            )
            if outcome is None:
                replies[node] = reply
            else:
                missing[node] = outcome
        return replies, missing

    def checked(
        self,
        server_round: int,
        phase: str,
        replies: dict[int, Message],
        missing: dict[int, PhaseOutcome],
        problem_of: ProblemOf,
    ) -> tuple[dict[int, Message], dict[int, PhaseOutcome]]:
        """Check the replies of a phase: node → sound reply (in site order), node → outcome of the others
        (`missing`'s included), each logged with the site and the phase it missed."""
        sound, absent = {}, dict(missing)
        for node in sorted(replies, key=self.directory.name):
            if problem := problem_of(node, replies[node]):
                absent[node] = PhaseOutcome(Status.DROPPED, problem)
            else:
                sound[node] = replies[node]
        for node, why in metric_name_outliers({n: r.content for n, r in sound.items()}).items():
            absent[node] = PhaseOutcome(Status.DROPPED, why)
            del sound[node]
        for node, outcome in sorted(absent.items(), key=lambda item: self.directory.name(item[0])):
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
