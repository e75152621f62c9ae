"""Atomic file writes: a reader sees the old file or the whole new one, never a partial one.

The new content goes to a uniquely named temp file in the target's folder (same file system, so the final
rename is atomic), is fsynced, renamed over the target, and the folder is fsynced so the rename survives a
crash. On any failure (an exception in the writer, KeyboardInterrupt) the temp file is removed and the old
target is left as it was.
"""

import errno
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_MARK = ".tmp"
"""Temp names are ``.<name>.<random>.tmp<suffixes>``: hidden, and ending like the target (see atomic_path)."""


@contextmanager
def atomic_path(path: Path | str, mode: int | None = None) -> Iterator[Path]:
    """Yield a temp path next to ``path`` for the caller to write; on success it replaces ``path``.

    The temp name ends with the target's suffixes (".nii.gz", ".pt", ...), so writers that pick the format
    from the name (nibabel) write the right one. The temp file is created empty with permissions 0600 and
    set to ``mode`` before it is yielded, so a secret written with mode=0o600 is never readable by others,
    even briefly; mode=None gives what ``open()`` would (0o666 less the umask). Writers must write into the
    yielded file (open it for writing, truncating), not replace it, or ``mode`` is lost.
    The target's folder is created when missing.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_MARK + "".join(target.suffixes[-2:])
    )
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, _default_mode() if mode is None else mode)
        finally:
            os.close(fd)
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)


def atomic_write_bytes(path: Path | str, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically (see atomic_path for ``mode``)."""
    with atomic_path(path, mode) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: Path | str, text: str, mode: int | None = None) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_write_json(path: Path | str, payload: object, *, indent: int = 2, sort_keys: bool = True) -> None:
    """Replace ``path`` with ``payload`` as JSON plus a final newline, atomically."""
    atomic_write_text(path, json.dumps(payload, indent=indent, sort_keys=sort_keys) + "\n")


def _default_mode() -> int:
    """0o666 less the process umask, as open() creates files; read without changing the umask where possible
    (os.umask sets it, which would briefly change it for other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable; file systems that cannot fsync a folder (EINVAL) are skipped."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)
