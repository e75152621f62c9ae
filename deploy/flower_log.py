"""What of a Flower log reaches an operator's terminal: every line except Python tracebacks and Flower's report of
an exception (its "… raised an exception" line, the traceback and the "Exit Code" block after it). They stay in the
log file; the command's own `error:` line names the exception in one line (`raised_exception`) and the log.
"""

import re
from collections.abc import Callable
from pathlib import Path

RUN_STARTED = re.compile(r"Successfully started run (\d+)")
"""What `flwr run` prints once the SuperLink accepted a submission: where that submission's log starts."""
RAISED = re.compile(r"\b(?:ServerApp|Simulation|ClientApp) raised an exception\b")
REPORT_END = re.compile(r"For more information, visit: <")
"""The last line of Flower's exit message (flwr.supercore.exit.flwr_exit) after an exception."""
TRACEBACK = "Traceback (most recent call last):"
CHAINED = ("During handling of the above exception", "The above exception was the direct cause")
LEVEL = re.compile(r"^(?:\x1b\[[0-9;]*m)?(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")
MAX_MESSAGE = 300


class WithoutTracebacks:
    """Passes each line to `on_line` unless it belongs to a traceback (its frames and the exception's line) or to
    Flower's report of an exception, which runs to its "For more information" line; log lines printed meanwhile
    (other than the report's "Exit Code") pass."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self._on_line = on_line
        self._in_report = False
        self._in_traceback = False

    def __call__(self, line: str) -> None:
        if RUN_STARTED.search(line):
            self._in_report = self._in_traceback = False
        elif RAISED.search(line):
            self._in_report, self._in_traceback = True, False
            return
        elif self._in_report and REPORT_END.search(line):
            self._in_report = False
            return
        if self._in_traceback:
            if line.startswith((" ", "\t", TRACEBACK, *CHAINED)) or not line.strip():
                return
            self._in_traceback = False
            if not LEVEL.match(line):
                return  # the exception's own line (or a chained traceback's heading)
        if line.startswith((TRACEBACK, *CHAINED)):
            self._in_traceback = True
            return
        if self._in_report and (not LEVEL.match(line) or "Exit Code:" in line):
            return
        self._on_line(line)


def without_tracebacks(text: str) -> str:
    """`text` without its tracebacks and Flower's exception reports (for an error message quoting a log)."""
    kept: list[str] = []
    keep = WithoutTracebacks(kept.append)
    for line in text.splitlines():
        keep(line)
    return "\n".join(kept)


def raised_exception(log_path: Path) -> str | None:
    """ "CheckpointError: … cannot be read" — the exception Flower reported in the log's latest submission (after
    its last "Successfully started run" line): the first line of the last traceback's exception, without its
    module path; None when Flower reported none."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return None
    starts = [match.end() for match in RUN_STARTED.finditer(text)]
    lines = text[starts[-1] if starts else 0 :].splitlines()
    reports = [index for index, line in enumerate(lines) if RAISED.search(line)]
    if not reports:
        return None
    found, in_frames = None, False
    for line in lines[reports[-1] + 1 :]:
        if REPORT_END.search(line) or (LEVEL.match(line) and "Exit Code:" in line):
            break
        if line.startswith(TRACEBACK):
            in_frames = True
        elif in_frames and line.strip() and not line.startswith((" ", "\t")):
            found, in_frames = line, False  # the last one: the exception a chained traceback ends with
    if found is None:
        return None
    name, _, message = found.partition(": ")
    name, message = name.rsplit(".", 1)[-1], message.strip()
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return f"{name}: {message}" if message else name
