"""The site's shorter Flower waits (deploy/site/flower_waits.py): the hooked lines are in the installed Flower,
exactly the hooked sleeps get shorter, Flower's object pulls retry sooner, and a changed Flower is refused."""

import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from deploy.site import flower_waits
from deploy.site.flower_waits import FlowerHookError, _ShortSleeps, check_supernode_sleeps

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_flower_has_exactly_the_hooked_sleeps():
    check_supernode_sleeps()


def test_a_flower_with_other_sleeps_is_refused(tmp_path):
    changed = tmp_path / "start_client_internal.py"
    changed.write_text("import time\n\ndef loop():\n    time.sleep(5)\n    time.sleep(0.5)\n")
    module = types.ModuleType("start_client_internal")
    module.__file__ = str(changed)
    exec(compile(changed.read_text(), str(changed), "exec"), module.__dict__)  # noqa: S102 - a test module
    with pytest.raises(FlowerHookError, match="not 1.42"):
        check_supernode_sleeps(module)


def test_only_the_hooked_durations_are_shortened():
    slept: list[float] = []
    short = _ShortSleeps({3.0: 0.5, 0.5: 0.05}, sleep=slept.append)
    for seconds in (3, 0.5, 1.0, 2):
        short.sleep(seconds)
    assert slept == [0.5, 0.05, 1.0, 2]
    assert short.monotonic() > 0  # the rest is the real time module


HOOKED_PROCESS = textwrap.dedent(
    """
    import json, time
    import flwr.supernode.start_client_internal as loop
    from flwr.supercore.inflatable import inflatable_utils as pulls
    def backoff(name):
        defaults = getattr(pulls, name).__kwdefaults__
        return {key: defaults[key] for key in ("initial_backoff", "backoff_cap")}
    before = {name: backoff(name) for name in ("pull_objects", "pull_and_inflate_object_from_tree")}
    from deploy.site.flower_waits import shorten_pull_backoff, shorten_supernode_sleeps
    shorten_supernode_sleeps()
    shorten_pull_backoff()
    clock = time.monotonic()
    loop.time.sleep(3)
    fetch_wait = time.monotonic() - clock
    after = {name: backoff(name) for name in before}
    print(json.dumps({"fetch_wait": fetch_wait, "before": before, "after": after,
                      "real_sleep_kept": time.sleep.__module__ == "time"}))
    """
)


def test_a_hooked_supernode_waits_half_a_second_and_retries_objects_sooner():
    """In a fresh process (the hooks change Flower's modules for the whole process): the loop's 3 s wait takes
    FETCH_INTERVAL_S, the pull functions' first retry and cap are ours, where before they were Flower's 1 s and
    10 s (the control), and `time.sleep` itself is untouched."""
    import json

    done = subprocess.run(
        [sys.executable, "-c", HOOKED_PROCESS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert flower_waits.FETCH_INTERVAL_S - 0.05 <= seen["fetch_wait"] < 1.5
    for name, defaults in seen["before"].items():
        assert (defaults["initial_backoff"], defaults["backoff_cap"]) == (1, 10)
        after = seen["after"][name]
        assert (after["initial_backoff"], after["backoff_cap"]) == (
            flower_waits.PULL_INITIAL_BACKOFF_S,
            flower_waits.PULL_BACKOFF_CAP_S,
        )
    assert seen["real_sleep_kept"]
