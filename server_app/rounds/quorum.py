"""Before each round: wait, up to a deadline, until the quorum (`min-sites`) is online, and keep track of when
the coordinator last heard from each site.

Flower's own sampling waits forever for its minimum; here the wait has a deadline, and when it passes the run
stops with the offline sites named (the run can then be continued with `oncofed run --resume`).
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from logging import INFO

from flwr.common.logger import log
from flwr.serverapp import Grid

from server_app.rounds.site_directory import SiteDirectory

POLL_S = 2.0


class QuorumNotReached(RuntimeError):
    """Fewer than `min-sites` sites were online when the wait ended; the message names the offline ones."""

    def __init__(self, online: list[str], offline: list[str], min_sites: int, waited_s: float) -> None:
        self.online, self.offline = online, offline
        super().__init__(
            f"only {len(online)} of {len(online) + len(offline)} sites online after waiting {waited_s:.0f} s "
            f"(min-sites {min_sites}); offline: {', '.join(offline) or 'none known'}"
        )


@dataclass
class Presence:
    """When (wall clock, epoch seconds) the coordinator last heard from each site: the last time Flower listed it
    online (it had a heartbeat within Flower's window, about a minute) or a reply of the site arrived. Not when
    its absence was noticed, which can be a heartbeat window or a whole phase later."""

    last_heard: dict[str, float] = field(default_factory=dict)

    def update(self, online: Iterable[str], now: float) -> None:
        """The sites Flower lists online `now`."""
        for site in online:
            self.heard(site, now)

    def heard(self, site: str, now: float) -> None:
        self.last_heard[site] = max(now, self.last_heard.get(site, now))

    def last_heard_text(self) -> dict[str, str]:
        """site → "14:02:31" (local time), or "2025-01-31 14:02:31" when not today."""
        today = datetime.now().date()
        texts = {}
        for site, heard in self.last_heard.items():
            moment = datetime.fromtimestamp(heard)
            texts[site] = moment.strftime("%H:%M:%S" if moment.date() == today else "%Y-%m-%d %H:%M:%S")
        return texts

    def state(self) -> dict:
        return {"last_heard": dict(self.last_heard)}

    @classmethod
    def from_state(cls, state: dict) -> "Presence":
        return cls(dict(state.get("last_heard", {})))


def online_sites(grid: Grid, directory: SiteDirectory) -> tuple[dict[int, str], set[str]]:
    """node id → site name of every node online now (the name the site directory filed it under, else the name its
    key was registered under, else node-<id>), and the names among them that identify a site (not a node-<id>
    placeholder)."""
    online, identified = {}, set()
    for node in grid.get_nodes():
        if directory.knows(node.node_id) or node.name:
            online[node.node_id] = (
                directory.name(node.node_id) if directory.knows(node.node_id) else node.name
            )
            identified.add(online[node.node_id])
        else:
            online[node.node_id] = f"node-{node.node_id}"
    return online, identified


def wait_for_quorum(
    grid: Grid,
    directory: SiteDirectory,
    presence: Presence,
    *,
    min_sites: int,
    wait_s: float,
    expected: Iterable[str],
    poll_s: float = POLL_S,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[int, str]:
    """The online nodes (id → site) once at least `min_sites` are online; QuorumNotReached after `wait_s`."""
    expected = set(expected)
    started = clock()
    announced: frozenset[str] | None = None
    while True:
        online, identified = online_sites(grid, directory)
        everyone = expected | set(directory.names) | set(presence.last_heard) | identified
        presence.update(identified, wall_clock())
        offline = sorted(everyone - identified)
        if len(online) >= min_sites:
            return online
        waited = clock() - started
        if waited >= wait_s:
            raise QuorumNotReached(sorted(online.values()), offline, min_sites, waited)
        if announced != frozenset(online.values()):
            announced = frozenset(online.values())
            give_up = datetime.fromtimestamp(wall_clock() + wait_s - waited).strftime("%H:%M:%S")
            log(
                INFO,
                "Waiting for sites: %d online, min-sites %d (offline: %s); the run stops at %s without them",
                len(online),
                min_sites,
                ", ".join(offline) or "none known",
                give_up,
            )
        sleep(min(poll_s, max(wait_s - waited, 0.0)))
