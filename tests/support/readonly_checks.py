"""Proving a folder is only read: content digests of a tree, and running as an ordinary user when tests run as root
(root reads whatever the permission bits say, so only an ordinary user shows that unreadable files fail)."""

import contextlib
import hashlib
import os
from pathlib import Path

NOBODY = 65534


@contextlib.contextmanager
def unprivileged():
    """Run the body as 'nobody' (effective ids) when the tests run as root; otherwise as the current user."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of the content (a link's target for links), for every entry below ``root``."""
    digest = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            digest[name] = "link:" + os.readlink(path)
        elif path.is_file():
            try:
                digest[name] = hashlib.sha256(path.read_bytes()).hexdigest()
            except PermissionError:  # an unreadable test file, when not running as root
                digest[name] = f"unreadable:{path.stat().st_size}:{path.stat().st_mtime_ns}"
        else:
            digest[name] = "folder"
    return digest
