"""Atomic file writes: a reader sees the old file or the whole new one, never a half-written file.

The temporary file lies in the target's own folder (a rename across file systems is a copy, not atomic) and keeps
the target's suffix, so writers that choose a format by the name (nibabel's ``.nii.gz``) still work; its name
starts with "." so that a folder scan never takes it for data.
"""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _suffix(name: str) -> str:
    """``.nii.gz`` for ``x.nii.gz``, ``.json`` for ``x.json``, "" for a name without suffix."""
    suffixes = Path(name).suffixes
    return "".join(suffixes[-2:]) if len(suffixes) >= 2 and suffixes[-1] == ".gz" else "".join(suffixes[-1:])


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it is fsynced and renamed onto ``path``.

    Creates the parent folder. On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{_suffix(path.name)}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
