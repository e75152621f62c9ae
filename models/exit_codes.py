"""One exit-code table for every command, and a helper that prints one error line and exits with its code."""

from enum import IntEnum
from typing import NoReturn


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    """A command-line usage error (click's own code)."""
    BAD_INPUT = 3
    """A file, folder or setting named on the command line cannot be used; the message names it."""
    NO_USABLE_DATA = 4
    """The command ran, but no case or study could be used."""
    REFUSED = 5
    """Refused by policy: not approved, revoked, out of the site's limits."""
    INTERRUPTED = 130


def fail(message: str, code: ExitCode) -> NoReturn:
    """Print ``error: message`` on stderr (one line, no markup) and exit with ``code``."""
    import typer
    from rich.console import Console

    Console(stderr=True).print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(int(code))
