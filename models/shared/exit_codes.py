"""The exit codes of every `oncofed` command, and the one door a command fails through.

Scripts that drive OncoFed (cron, systemd units, hospital IT's checks) branch on these, so each code means
one thing in every command. README.md's "Exit codes" table documents the same codes (tests/unit/test_cli.py
compares them). The function a command calls raises CommandError (`errors_as` turns its domain errors into one);
`reports_errors` makes that the command's `error:` line and exit code. Only typer is imported here: every command
module imports this at `oncofed` start-up.
"""

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import IntEnum, unique
from typing import ParamSpec, TypeVar

import typer


@unique
class ExitCode(IntEnum):
    """What a command's exit status means."""

    OK = 0
    """The command did what it was asked."""
    FAILED = 1
    """The run or a process it started failed (a Flower process exited, a run did not finish, the coordinator
    did not answer); the message says where the logs are."""
    USAGE = 2
    """Click's own usage errors: an unknown option, a missing or malformed argument, options that do not go
    together. Click prints the usage line with it."""
    BAD_INPUT = 3
    """A named file, setting, spec or kit is wrong (missing, unreadable, invalid); the message names it and
    the fix. Nothing was started."""
    NO_USABLE_DATA = 4
    """The inputs are readable but hold nothing to work on: no usable case, no validated round. No result was
    written (`site check` still writes its inventory, which says why each case was excluded)."""
    REFUSED = 5
    """Refused by policy: an app the site has not approved, a revoked site, settings outside its limits."""
    INTERRUPTED = 130
    """Ctrl-C or SIGTERM stopped a job before it was done (128 + SIGINT, as shells report it); every process
    the command started was stopped. A foreground service (`coordinator start`, `site start`) stopped this way
    exits OK: that is how systemd and Docker stop it."""


def fail(message: str, code: ExitCode) -> typer.Exit:
    """Print `error: <message>` on stderr and return the exit to raise (`raise fail(…) from None`).

    The message is printed as it is (never read as rich markup: file names and TOML tables hold brackets).
    """
    if code is ExitCode.OK:
        raise ValueError("fail() is for a non-zero exit")
    from rich.text import Text  # the error path only: `oncofed --help` does not pay for rich

    from models.shared.terminal import make_console

    make_console(stderr=True, highlight=False, soft_wrap=True).print(
        Text.assemble(("error:", "bold red"), " ", message)
    )
    return typer.Exit(int(code))


class CommandError(Exception):
    """Why a command could not do what it was asked: its `error:` line and its exit code."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.code = code


@contextmanager
def errors_as(code: ExitCode, *errors: type[Exception]) -> Iterator[None]:
    """Inside the block, any of `errors` becomes a CommandError with its message and `code`."""
    try:
        yield
    except errors as error:
        raise CommandError(str(error), code) from None


P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """A typer command whose CommandError is printed as one `error:` line and ends it with its exit code; a Ctrl-C
    the command did not handle itself (one that starts nothing, or while Python loads it) is said, with INTERRUPTED."""

    @functools.wraps(command)
    def reporting(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except CommandError as error:
            raise fail(str(error), error.code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", ExitCode.INTERRUPTED) from None

    return reporting
