"""Stopping what we started: the whole tree, by process id, nothing else."""

import os
import subprocess
import sys
import time

from deploy.processes import follow_log, free_port, process_tree, start_process, stop_tree, stop_trees


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
    """`oncofed simulate` stops all it started at once: three processes that ignore SIGTERM are killed after one
    grace period (one after another, as before, took three and overran a Ctrl-C test's limit under load)."""
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
