"""Start Flower processes on free ports and stop exactly those, with every process they spawned, also on Ctrl-C.

A command starts its processes in a ProcessGroup. Each is marked (GROUP_ENV in its environment, which every
descendant inherits) and registered before a signal can interrupt its start. Stopping a group reads /proc: the
started processes, their descendants and sessions, and every process with the mark (one re-parented away from our
tree too); all get SIGTERM and share one grace period, whatever is left then gets SIGKILL. Processes are found by
id and start time, never by name, so a recycled pid is never signalled.

`stop_on_signals` is how a command is stopped: the first Ctrl-C (or SIGTERM, what systemd and Docker send) says
what stops and unwinds the command like KeyboardInterrupt, so that its groups stop; a second one kills every open
group at once. A signal that arrives while a start is registered or a group is being stopped never breaks either:
it takes effect right after. Once a signal has stopped the block, later ones are absorbed: the command is on its
way out, and a Ctrl-C pressed just as its stop finished must not turn a clean stop into a traceback.
"""

import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Self

STOP_GRACE_S = 8.0
"""How long processes have to exit after SIGTERM (Flower's sign-off included) before they are killed."""
KILL_WAIT_S = 3.0
"""How long to wait for killed processes to be gone."""
RESCAN_S = 0.5
"""While stopping, how often /proc is read again for processes started meanwhile (Ray starts workers)."""
GROUP_ENV = "ONCOFED_PROCESS_GROUP"
INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Proc = tuple[int, int | None]
"""(pid, start time in clock ticks); a start time of None matches whatever process has the pid now."""
GONE = -1
"""The start time of a process that had exited when it was read: only what is left of its session is found."""


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


def _has_env(pid: int, item: bytes) -> bool:
    try:
        return item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone, or not ours
        return False


def _members(roots: Sequence[Proc], mark: str | None = None) -> list[tuple[int, int]]:
    """(pid, start time) of the running `roots`, their descendants, the rest of the sessions they lead (start_process
    gives each command its own: a child re-parented because its parent exited is still found) and, with `mark`, every
    process whose environment holds GROUP_ENV=mark; parents before children. One read of /proc."""
    stats = {int(e): s for e in os.listdir("/proc") if e.isdigit() and (s := _proc_stat(int(e)))}
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    live_roots = [pid for pid, start in roots if pid in stats and start in (None, stats[pid][1])]
    # a session id is not reused while the session exists; a root pid now held by another process is not ours
    leaders = {pid for pid, start in roots if pid not in stats or start in (None, stats[pid][1])}
    queue = live_roots + sorted(pid for pid, (_, _, sid) in stats.items() if sid in leaders)
    if mark is not None:
        marker = f"{GROUP_ENV}={mark}".encode()
        queue += sorted(pid for pid in stats if pid != os.getpid() and _has_env(pid, marker))
    found: dict[int, int] = {}
    while queue:
        pid = queue.pop(0)
        if pid not in found:
            found[pid] = stats[pid][1]
            queue.extend(children.get(pid, []))
    return list(found.items())


def process_tree(root: int) -> list[tuple[int, int]]:
    """(pid, start time) of `root`, its descendants and whatever is left in the session it leads; parents first."""
    return _members([(root, None)])


def _alive(pid: int, start: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[1] == start  # same start time: not a recycled pid


def _send(processes: Iterable[tuple[int, int]], signum: int) -> None:
    for pid, start in processes:
        if _alive(pid, start):
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)


def _sweep(
    find: Callable[[], list[tuple[int, int]]], popens: Sequence[subprocess.Popen], grace_s: float
) -> None:
    """SIGTERM what `find` returns (children first), and what it finds later on; SIGKILL whatever is left after
    `grace_s`, or at once after a second Ctrl-C. Returns when nothing is left, or KILL_WAIT_S after the SIGKILL."""
    with _shielded():
        deadline = time.monotonic() + grace_s
        known: set[tuple[int, int]] = set()
        left: list[tuple[int, int]] = []
        scanned = 0.0
        while time.monotonic() < deadline and not _STATE.at_once:
            if not left or time.monotonic() - scanned >= RESCAN_S:
                new = [p for p in reversed(find()) if p not in known]
                scanned = time.monotonic()
                known.update(new)
                _send(new, signal.SIGTERM)
                left += new
                if not left:
                    break
            time.sleep(0.05)
            _reap(popens)
            left = [p for p in left if _alive(*p)]
        kill_deadline = time.monotonic() + KILL_WAIT_S
        while left := [p for p in {*left, *find()} if _alive(*p)]:
            _send(left, signal.SIGKILL)
            if time.monotonic() > kill_deadline:
                break
            time.sleep(0.05)
            _reap(popens)
        _reap(popens)


def _reap(popens: Sequence[subprocess.Popen]) -> None:
    """Collect the exit status of those that are our children (a zombie is not alive, but stays listed until
    reaped)."""
    for popen in popens:
        popen.poll()


def stop_tree(root: int, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process and its descendants, SIGKILL what is left after `grace_s`."""
    stop_trees([root], grace_s)


def stop_trees(roots: Iterable[int], grace_s: float = STOP_GRACE_S) -> None:
    """stop_tree for several processes at once: every tree is read before any process is signalled, and all share
    one grace period, so stopping n processes that ignore SIGTERM takes one grace period, not n."""
    pinned = [_pin(pid) for pid in roots]
    _sweep(lambda: _members(pinned), [], grace_s)


def _pin(pid: int) -> tuple[int, int]:
    """The process with this pid now (its start time), so that a later read never takes a recycled pid for it."""
    stat = _proc_stat(pid)
    return pid, GONE if stat is None else stat[1]


@dataclass
class StartedProcess:
    """A process we started, with where its output goes."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    start: int = GONE
    """Its start time in clock ticks."""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop this process and every process it spawned (not the rest of its group)."""
        _sweep(lambda: _members([(self.pid, self.start)]), [self.popen], grace_s)
        with suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=1)


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
    return StartedProcess(name=name, popen=popen, log_path=log_path, start=_pin(popen.pid)[1])


class ProcessGroup:
    """Processes started together and stopped together, with every process they spawn. As a context manager it
    stops them when the block ends (done, failed or interrupted)."""

    def __init__(self, grace_s: float = STOP_GRACE_S) -> None:
        self.mark = uuid.uuid4().hex
        self.grace_s = grace_s
        """How long its processes have to exit after SIGTERM."""
        self.started: list[StartedProcess] = []
        _OPEN_GROUPS.append(self)

    def start(
        self, name: str, command: Sequence[str], env: dict[str, str], log_path: Path, cwd: Path | None = None
    ) -> StartedProcess:
        """start_process, marked as this group's; registered before a Ctrl-C can interrupt the start."""
        with _shielded():
            if self not in _OPEN_GROUPS:  # started again after a stop
                _OPEN_GROUPS.append(self)
            process = start_process(name, command, {**env, GROUP_ENV: self.mark}, log_path, cwd)
            self.started.append(process)
        return process

    def members(self) -> list[tuple[int, int]]:
        """(pid, start time) of every running process of the group; parents first."""
        return _members([(p.pid, p.start) for p in self.started], self.mark)

    def stop(self) -> None:
        """SIGTERM every process of the group, SIGKILL what is left after its grace period (at once after a second
        Ctrl-C)."""
        try:
            _sweep(self.members, [p.popen for p in self.started], self.grace_s)
        finally:
            if self in _OPEN_GROUPS:
                _OPEN_GROUPS.remove(self)

    def kill(self) -> None:
        """SIGKILL every process of the group, now."""
        _send(self.members(), signal.SIGKILL)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


@dataclass
class _SignalState:
    what: str = ""
    received: int = 0
    shielded: int = 0
    """Depth of blocks a signal must not break (a start being registered, a stop)."""
    pending: bool = False
    """A first signal arrived in such a block: its KeyboardInterrupt is raised when the block ends."""
    at_once: bool = False


_STATE = _SignalState()
_OPEN_GROUPS: list[ProcessGroup] = []
"""Groups started and not yet stopped: what a second Ctrl-C kills (signals are process-wide, so is this list)."""


@contextmanager
def _shielded() -> Iterator[None]:
    _STATE.shielded += 1
    try:
        yield
    finally:
        _STATE.shielded -= 1
    if _STATE.shielded == 0 and _STATE.pending:
        _STATE.pending = False
        raise KeyboardInterrupt


def _say(message: str) -> None:
    """A line on stderr, written unbuffered: a signal handler may run while the main thread is mid-print."""
    with suppress(OSError):
        os.write(2, f"{message}\n".encode())


def _on_signal(signum: int, _: FrameType | None) -> None:
    _STATE.received += 1
    if _STATE.received == 1:
        _say(f"stopping {_STATE.what}; press Ctrl-C again to stop at once")
        if _STATE.shielded:
            _STATE.pending = True
            return
        raise KeyboardInterrupt
    _STATE.at_once = True
    _say("stopping at once: killing every process it started")
    for group in _OPEN_GROUPS:
        group.kill()


def _after_stop(signum: int, _: FrameType | None) -> None:
    """A signal after one stopped the block: the groups are stopped and the command is exiting; nothing to do."""


@contextmanager
def stop_on_signals(what: str) -> Iterator[None]:
    """Inside the block, the first Ctrl-C or SIGTERM says on stderr that `what` stops and unwinds the block like
    KeyboardInterrupt (every group's stop runs, within one grace period); a second one kills every open group at
    once. A signal the command was started with ignored (`nohup`, `&` in a script) stays ignored. The previous
    handlers are restored afterwards, unless a signal stopped the block: then later signals are absorbed, so that
    the command's own way out (its message, its exit code) is not cut short."""
    previous = {signum: signal.getsignal(signum) for signum in INTERRUPT_SIGNALS}
    _STATE.what, _STATE.received, _STATE.pending, _STATE.at_once = what, 0, False, False
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        stopped = _STATE.received > 0
        for signum, handler in previous.items():
            signal.signal(signum, _after_stop if stopped and handler is not signal.SIG_IGN else handler)
        _STATE.pending = _STATE.at_once = False


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


def processes_with_env(key: str, value: str) -> list[int]:
    """Ids of the processes (readable by us) whose environment has key=value."""
    marker = f"{key}={value}".encode()
    return [
        int(e)
        for e in os.listdir("/proc")
        if e.isdigit() and int(e) != os.getpid() and _has_env(int(e), marker)
    ]
