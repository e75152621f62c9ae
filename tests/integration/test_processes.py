"""Stopping what we started: the whole tree, by process id, nothing else."""

import subprocess
import sys
import time

from deploy.processes import free_port, process_tree, stop_tree


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


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
