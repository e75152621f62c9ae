"""Stopping what we started: the whole tree, by process id, nothing else; on Ctrl-C, within one grace period, and
at once on a second Ctrl-C."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from deploy.processes import (
    GROUP_ENV,
    KILL_WAIT_S,
    follow_log,
    free_port,
    process_tree,
    processes_with_env,
    start_process,
    stop_tree,
    stop_trees,
)

DRIVER = Path(__file__).resolve().parents[1] / "support" / "interrupt_driver.py"


def test_stop_tree_stops_grandchildren_that_ignore_sigterm():
    # parent → child → grandchild; the grandchild ignores SIGTERM and must be killed
    script = (
        "import subprocess, sys, time\n"
        "code = 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'\n"
        "subprocess.Popen([sys.executable, '-c', code])\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        deadline = time.monotonic() + 10
        while len(process_tree(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = process_tree(parent.pid)
        assert len(tree) == 2
        stop_tree(parent.pid, grace_s=1.0)
        parent.wait(timeout=5)
        for pid, _ in tree:
            assert process_tree(pid) == [], f"process {pid} survived"
        assert bystander.poll() is None, "a process we did not start was stopped"
    finally:
        bystander.kill()
        bystander.wait()
        stop_tree(parent.pid, grace_s=0.5)


def test_stop_trees_shares_one_grace_period():
    """Processes stopped together share one grace period: three that ignore SIGTERM are killed after one, not
    three."""
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(600)"
    processes = [
        subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE, start_new_session=True)
        for _ in range(3)
    ]
    try:
        for process in processes:  # each has set its handler once it has written a line
            process.stdout.readline()
        grace_s = 3.0
        clock = time.monotonic()
        stop_trees([p.pid for p in processes], grace_s=grace_s)
        elapsed = time.monotonic() - clock
        assert all(p.poll() is not None for p in processes), "a process survived"
        assert grace_s <= elapsed < 2 * grace_s, f"took {elapsed:.1f} s for a grace period of {grace_s} s"
    finally:
        stop_trees([p.pid for p in processes], grace_s=0.5)


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_follow_log_ends_when_a_companion_exits(tmp_path):
    """A site's SuperNode log is followed until the SuperNode or its gate exits: here the gate (a companion)
    exits while the main process keeps running and writing; every line written before is handed over."""
    main = start_process(
        "main",
        [sys.executable, "-u", "-c", "import time\nprint('first', flush=True)\ntime.sleep(60)"],
        dict(os.environ),
        tmp_path / "main.log",
    )
    wait_for_first = (  # the companion exits once the main process has written its line
        f"import pathlib, time\nlog = pathlib.Path({str(tmp_path / 'main.log')!r})\n"
        "while 'first' not in log.read_text():\n    time.sleep(0.05)"
    )
    companion = start_process(
        "companion", [sys.executable, "-c", wait_for_first], dict(os.environ), tmp_path / "c.log"
    )
    lines: list[str] = []
    try:
        started = time.monotonic()
        follow_log(main, lines.append, poll_s=0.1, timeout_s=30, companions=[companion])
        assert time.monotonic() - started < 30 and main.popen.poll() is None
        assert lines == ["first"]
    finally:
        main.stop()
        companion.stop()


def test_the_commands_a_test_starts_take_ctrl_c():
    """What every Ctrl-C test here needs: SIGINT not ignored in the processes it starts."""
    probe = subprocess.run(
        [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "False"


def test_a_test_run_started_with_ctrl_c_ignored_still_starts_commands_that_take_it():
    """A test run started in the background of a script (SIGINT ignored, as `make test &` does) gives its commands
    SIGINT back (tests/conftest.py), so the probe above passes there too."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{__file__}::test_the_commands_a_test_starts_take_ctrl_c",
        ],
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def start_driver(mode: str, grace_s: float, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """tests/support/interrupt_driver.py in `mode`, once its processes run; with the mark of its group."""
    driver = subprocess.Popen(
        [sys.executable, str(DRIVER), mode, str(grace_s), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = driver.stdout.readline()
    assert ready.startswith("ready "), ready + driver.stderr.read()
    return driver, ready.split()[1]


def test_first_ctrl_c_stops_the_group_within_its_grace_period(tmp_path):
    """The first Ctrl-C says what stops and how to hurry it, then every process of the group is gone after one grace
    period: the one that ignores SIGTERM and the one only the group's mark finds (re-parented, its own session)."""
    grace_s = 2.0
    driver, mark = start_driver("stubborn", grace_s, tmp_path)
    try:
        members = processes_with_env(GROUP_ENV, mark)
        assert len(members) == 2 and set(members) - {pid for pid, _ in process_tree(driver.pid)}
        clock = time.monotonic()
        driver.send_signal(signal.SIGINT)
        assert driver.wait(timeout=30) == 130
        elapsed = time.monotonic() - clock
        assert grace_s <= elapsed < grace_s + KILL_WAIT_S + 2, f"stopped in {elapsed:.1f} s"
        assert driver.stderr.read().splitlines()[0] == (
            "stopping the test processes; press Ctrl-C again to stop at once"
        )
        assert processes_with_env(GROUP_ENV, mark) == []
    finally:
        stop_trees([driver.pid, *processes_with_env(GROUP_ENV, mark)], grace_s=0.5)


def test_second_ctrl_c_kills_the_group_at_once(tmp_path):
    driver, mark = start_driver("stubborn", 60.0, tmp_path)
    try:
        driver.send_signal(signal.SIGINT)
        assert "press Ctrl-C again to stop at once" in driver.stderr.readline()
        time.sleep(1.0)
        assert driver.poll() is None, "stopped before its grace period ended"
        clock = time.monotonic()
        driver.send_signal(signal.SIGINT)
        assert driver.wait(timeout=30) == 130
        assert time.monotonic() - clock < 5, "the second Ctrl-C did not stop it at once"
        assert driver.stderr.readline().startswith("stopping at once: killing every process it started")
        assert processes_with_env(GROUP_ENV, mark) == []
    finally:
        stop_trees([driver.pid, *processes_with_env(GROUP_ENV, mark)], grace_s=0.5)


def test_a_ctrl_c_while_stopping_neither_breaks_the_stop_nor_is_lost(tmp_path):
    """A Ctrl-C that arrives while the group stops (here sent by a child as it gets SIGTERM): the stop goes on
    (the child that ignores SIGTERM is still killed after the grace period), then the command ends interrupted."""
    grace_s = 2.0
    driver, mark = start_driver("ctrl-c-while-stopping", grace_s, tmp_path)
    try:
        clock = time.monotonic()
        assert driver.wait(timeout=30) == 130, driver.stdout.read()
        assert time.monotonic() - clock >= grace_s
        assert "stopping the test processes" in driver.stderr.read()
        assert processes_with_env(GROUP_ENV, mark) == []
    finally:
        stop_trees([driver.pid, *processes_with_env(GROUP_ENV, mark)], grace_s=0.5)


def test_a_ctrl_c_just_after_the_stop_finished_leaves_the_exit_as_it_was(tmp_path):
    """Ctrl-C pressed twice, the second just after the stop finished: the command still ends its own way (here exit
    130 after its message), not killed by the signal or with a traceback."""
    driver, mark = start_driver("ctrl-c-after-the-stop", 2.0, tmp_path)
    try:
        driver.send_signal(signal.SIGINT)
        assert driver.stdout.readline() == "interrupted\n"
        assert driver.stdout.readline() == "stopped\n"
        driver.send_signal(signal.SIGINT)
        assert driver.wait(timeout=30) == 130
        errors = driver.stderr.read()
        assert "Traceback" not in errors and "stopping at once" not in errors, errors
        assert processes_with_env(GROUP_ENV, mark) == []
    finally:
        stop_trees([driver.pid, *processes_with_env(GROUP_ENV, mark)], grace_s=0.5)
