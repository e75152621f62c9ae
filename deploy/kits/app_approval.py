"""A site's allow-list of apps: the SHA-256 of every Flower app bundle (FAB) this site agreed to run.

It lives in the site kit (`approved-apps.toml`), is written only by `oncofed provision` (the federation's release,
pre-approved) and by the site's own `oncofed site approve` / `oncofed site revoke-app`, and is read by the site's
gate (deploy/site/approval_gate.py) at every task, so an approval or a revocation takes effect without a restart.
A file that cannot be read approves nothing (the gate fails closed).

    [[app]]
    sha256 = "ba06e077…"            # of the FAB file: what Flower calls the run's fab_hash
    publisher = "oncofed"
    name = "oncofed"
    version = "0.1.0"
    approved-at = "2026-01-31T09:12:00+00:00"
    approved-by = "it-admin@hospital-a"
    note = "release of federation oncofed-brain, pre-approved by its kit"
"""

import datetime as dt
import getpass
import re
import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from deploy.kits.release_fab import FabInfo
from models.shared.atomic import atomic_write_bytes

ALLOW_LIST_FILE = "approved-apps.toml"
HEADER = (
    "# Apps (Flower app bundles) this site runs, by the SHA-256 of the FAB file.\n"
    "# Change it with `oncofed site approve --kit DIR --fab FILE` and `oncofed site revoke-app --kit DIR --hash H`.\n"
)
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MIN_PREFIX = 8
"""`revoke-app --hash` accepts a unique prefix of at least this many hex digits."""


class ApprovalError(ValueError):
    """The allow-list or a request to change it cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class ApprovedApp:
    sha256: str
    publisher: str
    name: str
    version: str
    approved_at: str
    approved_by: str
    note: str = ""

    def as_toml(self) -> dict[str, str]:
        return {
            "sha256": self.sha256,
            "publisher": self.publisher,
            "name": self.name,
            "version": self.version,
            "approved-at": self.approved_at,
            "approved-by": self.approved_by,
            "note": self.note,
        }


def read_allow_list(path: Path) -> list[ApprovedApp]:
    """Every approved app; a missing file approves none. ApprovalError names a broken file or entry."""
    if not path.exists():
        return []
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ApprovalError(
            f"{path} cannot be read ({error.strerror}); it must be readable by the site's user"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ApprovalError(
            f"{path} is not valid TOML ({error}); restore it from the kit or a backup"
        ) from None
    apps = []
    for number, entry in enumerate(table.get("app", []), start=1):
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(sha, str) or not SHA256.match(sha):
            raise ApprovalError(
                f"{path}: [[app]] entry {number} has sha256 {sha!r}, expected 64 lower-case hex digits"
            )
        apps.append(
            ApprovedApp(
                sha256=sha,
                publisher=str(entry.get("publisher", "")),
                name=str(entry.get("name", "")),
                version=str(entry.get("version", "")),
                approved_at=str(entry.get("approved-at", "")),
                approved_by=str(entry.get("approved-by", "")),
                note=str(entry.get("note", "")),
            )
        )
    return apps


def write_allow_list(path: Path, apps: list[ApprovedApp]) -> None:
    body = tomli_w.dumps({"app": [app.as_toml() for app in apps]}) if apps else ""
    atomic_write_bytes(path, (HEADER + body).encode("utf-8"), 0o644)


def approval_of(info: FabInfo, approved_by: str, note: str = "") -> ApprovedApp:
    return ApprovedApp(
        sha256=info.sha256,
        publisher=info.publisher,
        name=info.name,
        version=info.version,
        approved_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        approved_by=approved_by,
        note=note,
    )


def approve(path: Path, approval: ApprovedApp) -> bool:
    """Add the app; False when its hash was approved already (the file is left as it was)."""
    apps = read_allow_list(path)
    if any(app.sha256 == approval.sha256 for app in apps):
        return False
    write_allow_list(path, [*apps, approval])
    return True


def revoke(path: Path, sha256: str) -> ApprovedApp:
    """Remove the app whose hash is `sha256` (or starts with it, if unique); returns what was removed."""
    wanted = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]+", wanted) or len(wanted) < MIN_PREFIX:
        raise ApprovalError(
            f"--hash {sha256!r}: give the app's SHA-256 (64 hex digits, or a unique prefix of at least "
            f"{MIN_PREFIX}); `oncofed site apps` lists them"
        )
    apps = read_allow_list(path)
    matches = [app for app in apps if app.sha256.startswith(wanted)]
    if not matches:
        raise ApprovalError(
            f"no approved app in {path} has the hash {wanted}; `oncofed site apps` lists them"
        )
    if len(matches) > 1:
        raise ApprovalError(f"--hash {wanted} matches {len(matches)} approved apps; give more digits")
    write_allow_list(path, [app for app in apps if app is not matches[0]])
    return matches[0]


def current_user() -> str:
    """Who approves: user@host, for the record in the allow-list."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
