"""A process that exits on its own leaves its children behind (re-parented): stopping it must still stop them,
as when a SuperNode refused by the coordinator exits and its SuperExec lingers."""

import sys
from pathlib import Path

from deploy.processes import process_tree, start_process


def test_children_of_an_exited_process_are_stopped(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))"
    )
    parent = start_process("parent", [sys.executable, "-c", script], {}, tmp_path / "parent.log")
    parent.popen.wait(timeout=30)  # the parent is gone; its child lives on, re-parented
    child = int(pid_file.read_text())
    assert Path(f"/proc/{child}").exists()
    assert [pid for pid, _ in process_tree(parent.pid)] == [child]
    parent.stop()
    assert process_tree(child) == []
