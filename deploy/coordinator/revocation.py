"""Revoking a site: its key is unregistered on the running SuperLink and recorded, so no restart registers it again.

`oncofed coordinator revoke --kit DIR --site NAME` first writes the revocation into the coordinator kit
(`revoked-sites.toml`), then unregisters the site's key on the SuperLink if it is running: once a key is
unregistered, Flower refuses the site's next Fleet request (401: no node for that key), which comes within one
heartbeat interval. `oncofed coordinator start` registers every site except the revoked ones, and unregisters a
revoked key it still finds registered (a revocation made while the coordinator was stopped).
"""

import datetime as dt
import tomllib
from dataclasses import dataclass

import tomli_w

from deploy.kits import certificates as certs
from deploy.kits.contents import CoordinatorKit, KitError
from models.shared.atomic import atomic_write_bytes

HEADER = "# Sites revoked with `oncofed coordinator revoke`: `oncofed coordinator start` never registers them again.\n"


@dataclass(frozen=True)
class Revocation:
    site: str
    fingerprint: str
    revoked_at: str
    reason: str


def read_revocations(kit: CoordinatorKit) -> dict[str, Revocation]:
    path = kit.revoked_file
    if not path.exists():
        return {}
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise KitError(
            f"{path} cannot be read ({error}): it lists the revoked sites, and the coordinator does not start "
            "without knowing them; restore it from a backup"
        ) from None
    return {
        site: Revocation(
            site=site,
            fingerprint=str(entry.get("fingerprint", "")),
            revoked_at=str(entry.get("revoked-at", "")),
            reason=str(entry.get("reason", "")),
        )
        for site, entry in table.get("sites", {}).items()
    }


def mark_revoked(kit: CoordinatorKit, site: str, reason: str = "") -> Revocation:
    """Record the revocation (idempotent); KitError for a site the kit does not know."""
    if site not in kit.sites:
        raise KitError(f"site {site!r} is not in this federation (its sites: {', '.join(kit.sites)})")
    revocations = read_revocations(kit)
    if site in revocations:
        return revocations[site]
    revocation = Revocation(
        site=site,
        fingerprint=certs.key_fingerprint(certs.load_site_public_key(kit.site_public_key(site))),
        revoked_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        reason=reason,
    )
    revocations[site] = revocation
    body = {
        "sites": {
            r.site: {"fingerprint": r.fingerprint, "revoked-at": r.revoked_at, "reason": r.reason}
            for r in revocations.values()
        }
    }
    atomic_write_bytes(kit.revoked_file, (HEADER + tomli_w.dumps(body)).encode("utf-8"))
    return revocation


def active_sites(kit: CoordinatorKit) -> list[str]:
    """The sites to register: all but the revoked ones."""
    revoked = read_revocations(kit)
    return [site for site in kit.sites if site not in revoked]
