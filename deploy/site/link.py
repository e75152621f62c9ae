"""What a site's console says about its link to the coordinator: when it was lost and when it came back.

The SuperNode retries on its own (its log: "Connection attempt failed, retrying in …" and, once through,
"Connection successful after … seconds"), but prints nothing a site's admin would look at. `site start` follows
the SuperNode's log and turns those lines into one message per change.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

LOST = "Connection attempt failed, retrying in"
REGAINED = "Connection successful after"


@dataclass
class LinkWatch:
    """Feed it the SuperNode's log lines; it calls `say` once when the link is lost and once when it is back."""

    coordinator: str
    say: Callable[[str], None]
    connected: bool = True
    lost_at: datetime | None = None

    def line(self, text: str, now: Callable[[], datetime] = datetime.now) -> None:
        if LOST in text and self.connected:
            self.connected, self.lost_at = False, now()
            self.say(
                f"{self.lost_at:%H:%M:%S} lost the coordinator at {self.coordinator}; Flower keeps trying "
                "(training resumes when it answers)"
            )
        elif REGAINED in text and not self.connected:
            back = now()
            away = (back - self.lost_at).total_seconds() if self.lost_at else 0.0
            self.connected = True
            self.say(
                f"{back:%H:%M:%S} the coordinator at {self.coordinator} answers again (after {away:.0f} s)"
            )
