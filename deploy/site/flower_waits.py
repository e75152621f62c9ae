"""Shorter fixed waits in a site's Flower processes, where Flower 1.42 has no setting for them.

A deployed message waits in three places that are sleeps, not work (bench/RESULTS.md, overhead timelines):

- the SuperNode's loop sleeps 3 s after every fetch that found no message
  (`flwr/supernode/start_client_internal.py`, `time.sleep(3)` in `start_client_internal`), so a message waits
  1.5 s on average before its site even sees it;
- while a ClientApp runs, the SuperNode checks for its reply every 0.5 s, and for each reply object the ClientApp
  has not finished pushing it sleeps 0.5 s (`time.sleep(0.5)` twice in `_push_messages`, same file);
- a ClientApp started as soon as its task exists finds the message's objects still on their way from the
  SuperLink to the SuperNode; Flower's object pull then backs off 1 s, 2 s, 4 s … (`PULL_INITIAL_BACKOFF = 1` in
  `flwr/supercore/constant.py`, bound as the keyword defaults of `pull_objects` and
  `pull_and_inflate_object_from_tree` in `flwr/supercore/inflatable/inflatable_utils.py`), so a model that
  arrives 0.2 s late costs 1–3 s.

`shorten_supernode_sleeps` gives that one module a `time` whose `sleep` maps exactly those durations to shorter
ones (every other attribute is the real `time` module); `shorten_pull_backoff` lowers the two keyword defaults in
this process. Both refuse to hook a Flower whose source no longer has the lines they replace
(tests/unit/test_flower_waits.py runs that check), so an upgrade cannot silently keep the old waits or shorten
an unrelated sleep.

The fetch interval is a request per interval from every idle site to the coordinator's proxy: at 0.5 s, two per
second per site, against the proxy's 200 per second per client address (deploy/kits/proxy_config.py).
"""

import inspect
import time
from collections.abc import Callable
from types import ModuleType

import flwr.supernode.start_client_internal as supernode_loop
from flwr.supercore.inflatable import inflatable_utils

FETCH_INTERVAL_S = 0.5
"""Seconds the SuperNode waits after a fetch that found no message (Flower's fixed wait: 3 s)."""
REPLY_POLL_S = 0.05
"""Seconds between the SuperNode's checks for a ClientApp's reply and its objects (Flower's: 0.5 s)."""
PULL_INITIAL_BACKOFF_S = 0.05
"""First wait before pulling again an object that has not arrived yet (Flower's: 1 s); doubles each try."""
PULL_BACKOFF_CAP_S = 0.5
"""Longest wait between two pulls of one object (Flower's: 10 s)."""

FLOWER_FETCH_SLEEP_S = 3
FLOWER_REPLY_SLEEP_S = 0.5
HOOKED_SLEEPS = {f"time.sleep({FLOWER_FETCH_SLEEP_S})": 1, f"time.sleep({FLOWER_REPLY_SLEEP_S})": 2}
"""The sleeps in `start_client_internal.py` this module shortens, and how often each occurs there (flwr 1.42)."""
PULL_FUNCTIONS = ("pull_objects", "pull_and_inflate_object_from_tree")
"""The functions of `inflatable_utils` whose keyword defaults `shorten_pull_backoff` lowers."""


class FlowerHookError(RuntimeError):
    """The installed Flower is not the one these hooks were written for."""


def check_supernode_sleeps(module: ModuleType = supernode_loop) -> None:
    """Raise FlowerHookError unless `module`'s source has exactly the sleeps in HOOKED_SLEEPS and no other."""
    source = inspect.getsource(module)
    found = {call: source.count(call) for call in HOOKED_SLEEPS}
    others = source.count("time.sleep(") - sum(found.values())
    if found != HOOKED_SLEEPS or others:
        raise FlowerHookError(
            f"{module.__file__}: expected the sleeps {HOOKED_SLEEPS} and no other, found {found} and {others} "
            "other(s); the installed flwr is not 1.42 (reinstall the site kit)"
        )


class _ShortSleeps:
    """Stands in for the `time` module inside one Flower module: `sleep` of a hooked duration waits the mapped
    duration instead; everything else is the real `time`."""

    def __init__(self, durations: dict[float, float], sleep: Callable[[float], None] = time.sleep) -> None:
        self._durations = durations
        self._sleep = sleep

    def sleep(self, seconds: float) -> None:
        self._sleep(self._durations.get(seconds, seconds))

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def shorten_supernode_sleeps(
    fetch_interval_s: float = FETCH_INTERVAL_S, reply_poll_s: float = REPLY_POLL_S
) -> dict[float, float]:
    """In this process, make the SuperNode's loop wait `fetch_interval_s` after an empty fetch and `reply_poll_s`
    between reply checks; the mapping applied (Flower's seconds → ours)."""
    check_supernode_sleeps()
    durations = {float(FLOWER_FETCH_SLEEP_S): fetch_interval_s, FLOWER_REPLY_SLEEP_S: reply_poll_s}
    supernode_loop.time = _ShortSleeps(durations)  # type: ignore[assignment]
    return durations


def shorten_pull_backoff(
    initial_s: float = PULL_INITIAL_BACKOFF_S, cap_s: float = PULL_BACKOFF_CAP_S
) -> dict[str, float]:
    """In this process, Flower's object pulls retry a missing object after `initial_s`, doubling up to `cap_s`."""
    values = {"initial_backoff": initial_s, "backoff_cap": cap_s}
    for name in PULL_FUNCTIONS:
        defaults = getattr(inflatable_utils, name).__kwdefaults__ or {}
        if not set(values) <= set(defaults):
            raise FlowerHookError(
                f"{inflatable_utils.__file__}: {name} has no keyword defaults {sorted(values)}; the installed flwr "
                "is not 1.42 (reinstall the site kit)"
            )
        defaults.update(values)
    return values
