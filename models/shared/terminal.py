"""The rich consoles our commands print with: as wide as the terminal, or, in a pipe or a file, one table row per line.

Rich lays output out for 80 columns when its stream is not a terminal (systemd's journal, CI logs, `| tee`), so a
table row wraps over several lines and no longer greps or diffs as one. A console made here gets PIPE_WIDTH
columns there instead, unless COLUMNS says otherwise (rich honours it) or the caller sets a width. rich is
imported when a console is made, never when `oncofed` starts.
"""

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

PIPE_WIDTH = 1000
"""Columns of a console that does not write to a terminal: wider than any row our tables print."""


def make_console(*, stderr: bool = False, **options: Any) -> "Console":
    """A rich Console on stdout (or stderr) with `options`, PIPE_WIDTH columns wide when not on a terminal."""
    from rich.console import Console

    console = Console(stderr=stderr, **options)
    if not console.is_terminal and "width" not in options and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console
