"""List the files of an export folder without being trapped by it: symbolic link loops, unreadable folders,
broken links and special files are reported with their reason, never followed forever or silently dropped.

Symbolic links to folders are followed (hospital shares often link studies in), each real folder once.
Hidden names (starting with ".") are skipped: OS and exporter bookkeeping, and our own temporary files.
"""

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileProblem:
    """A file or folder that is not part of any case, and why (the text names no file: ``path`` does)."""

    path: Path
    reason: str


def walk_files(
    root: Path, skip_folder: Callable[[Path], bool] = lambda _: False
) -> tuple[list[Path], list[FileProblem]]:
    """Every regular file below ``root`` (sorted), and the problems met on the way.

    ``skip_folder(path)`` prunes a folder (and what lies below it) without a problem being reported.
    """
    files: list[Path] = []
    problems: list[FileProblem] = []
    seen: dict[tuple[int, int], Path] = {}
    pending = [Path(root)]
    while pending:
        folder = pending.pop()
        try:
            info = folder.stat()
        except OSError as e:
            problems.append(FileProblem(folder, _os_reason(e, "folder")))
            continue
        key = (info.st_dev, info.st_ino)
        if key in seen:
            problems.append(
                FileProblem(
                    folder,
                    f"symbolic link loop or repeated link: leads to {seen[key]},"
                    " which is already scanned; not scanned again",
                )
            )
            continue
        seen[key] = folder
        try:
            names = sorted(entry.name for entry in os.scandir(folder))
        except OSError as e:
            problems.append(FileProblem(folder, _os_reason(e, "folder")))
            continue
        subfolders = []
        for name in names:
            if name.startswith("."):
                continue
            path = folder / name
            try:
                mode = path.stat().st_mode  # follows links: ELOOP / ENOENT for loops and broken links
            except OSError as e:
                problems.append(FileProblem(path, _os_reason(e, "file")))
                continue
            if stat.S_ISDIR(mode):
                if not skip_folder(path):
                    subfolders.append(path)
            elif stat.S_ISREG(mode):
                files.append(path)
            else:
                problems.append(FileProblem(path, "not a regular file (device, pipe or socket); not read"))
        pending.extend(reversed(subfolders))
    return sorted(files), problems


def _os_reason(error: OSError, kind: str) -> str:
    if error.errno == errno.ELOOP:
        return "symbolic link loop (the link leads back to itself); not followed"
    if error.errno == errno.ENOENT:
        return "broken symbolic link: its target does not exist"
    if error.errno == errno.EACCES:
        return f"permission denied: the {kind} cannot be read by this user; grant read access or remove it"
    return f"cannot access the {kind}: {error.strerror}"
