"""Start Flower processes on free ports and stop exactly those, with every process they spawned.

Processes are stopped by id: the tree below each started process is read from /proc *before* anything
is signalled (children are re-parented once their parent dies), then terminated, then killed.
"""

import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STOP_GRACE_S = 10.0


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, start time in clock ticks, session id) of a running process; None if gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # exited, waiting to be reaped: nothing left to stop
        return None
    return int(fields[1]), int(fields[19]), int(fields[3])


def process_tree(root: int) -> list[tuple[int, int]]:
    """(pid, start time) of `root` and all its descendants, parents first; then whatever is left in the session
    `root` leads (start_process gives each command its own): a child re-parented because its parent exited on
    its own, like a SuperNode's SuperExec, is still found. A session id is not reused while the session exists."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    in_session: list[int] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _proc_stat(int(entry))):
            parents.setdefault(stat[0], []).append(int(entry))
            starts[int(entry)] = stat[1]
            if stat[2] == root:
                in_session.append(int(entry))
    tree: list[tuple[int, int]] = []
    seen: set[int] = set()
    for start in ([root] if root in starts else []) + sorted(in_session):
        queue = [start]
        while queue:
            pid = queue.pop(0)
            if pid in seen:
                continue
            seen.add(pid)
            tree.append((pid, starts[pid]))
            queue.extend(parents.get(pid, []))
    return tree


def _alive(pid: int, start: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[1] == start  # same start time: not a recycled pid


def stop_tree(root: int, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process and its descendants, SIGKILL what is left after `grace_s`."""
    stop_trees([root], grace_s)


def stop_trees(roots: Sequence[int], grace_s: float = STOP_GRACE_S) -> None:
    """stop_tree for several processes at once: every tree is read before any process is signalled, and all
    share one grace period, so stopping n processes that ignore SIGTERM takes one grace period, not n."""
    tree: list[tuple[int, int]] = []
    for root in roots:
        tree.extend(p for p in process_tree(root) if p not in tree)
    for pid, _ in reversed(tree):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(*p) for p in tree):
        _reap(roots)
        time.sleep(0.1)
    for pid, start in tree:
        if _alive(pid, start):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(_alive(*p) for p in tree):
        _reap(roots)
        time.sleep(0.05)
    _reap(roots)


def _reap(pids: Sequence[int]) -> None:
    """Collect the exit status of those of `pids` that are our children (a zombie is not alive, but stays listed
    until reaped)."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


@dataclass
class StartedProcess:
    """A process we started, with where its output goes."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        stop_tree(self.pid)
        self.popen.wait(timeout=5)


def start_process(
    name: str, command: Sequence[str], env: dict[str, str], log_path: Path, cwd: Path | None = None
) -> StartedProcess:
    """Start `command` in its own session (so a Ctrl-C in the terminal is ours to forward), output to a log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            list(command),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
        )
    return StartedProcess(name=name, popen=popen, log_path=log_path)


def wait_for_health(
    process: StartedProcess, url: str, timeout_s: float = 60.0, context: ssl.SSLContext | None = None
) -> None:
    """Block until `url` answers 2xx (over TLS verified with `context` for https); fail early, with the log's
    tail, if the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(
                f"{process.name} exited with code {process.popen.returncode}; "
                f"see {process.log_path}:\n{tail(process.log_path)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2, context=context):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise TimeoutError(
        f"{process.name} did not answer {url} within {timeout_s:.0f} s; see {process.log_path}"
    )


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def follow_log(
    process: StartedProcess,
    on_line: Callable[[str], None],
    poll_s: float = 0.2,
    timeout_s: float | None = None,
    offset: int = 0,
    companions: Sequence[StartedProcess] = (),
) -> None:
    """Hand each line of the process's log (from byte `offset`: where this process's output starts in a log that
    earlier runs appended to) to `on_line` until the process, or one of its `companions` (processes it cannot
    work without), exits; past `timeout_s` (if given) raise TimeoutError, leaving the processes to the caller."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with open(process.log_path, encoding="utf-8", errors="replace") as log:
        log.seek(offset)
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"{process.name} still running after {timeout_s:.0f} s; see {process.log_path}"
                )
            line = log.readline()
            if line:
                on_line(line.rstrip("\n"))
            elif any(p.popen.poll() is not None for p in (process, *companions)):
                for rest in log:
                    on_line(rest.rstrip("\n"))
                return
            else:
                time.sleep(poll_s)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block, `kill <pid>` (SIGTERM, what systemd and Docker send) unwinds like Ctrl-C, so every
    `finally` that stops processes runs; the previous handler is restored afterwards."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def processes_with_env(key: str, value: str) -> list[int]:
    """Ids of the processes (readable by us) whose environment has key=value."""
    marker = f"{key}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if marker in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    found.append(int(entry))
            except OSError:
                continue
    return found
