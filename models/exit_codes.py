"""One exit-code table for every `oncofed` command (issue 14 defines it; the values here are the same)."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    """The command tried and something went wrong (a process exited, a network call failed)."""
    USAGE = 2
    """click/typer: an unknown option or a missing argument."""
    BAD_INPUT = 3
    """A file or setting given to the command is missing or invalid; the message names it and the fix."""
    NO_USABLE_DATA = 4
    REFUSED = 5
    """Refused by policy: an app not approved, a revoked site, an approval declined."""
    INTERRUPTED = 130
