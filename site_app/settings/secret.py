"""The site's own secret: 32 random bytes in its work folder, created once, readable by the site's user only.

It keys everything the coordinator must not be able to replay or predict: the bootstrap resamples of the
validation CIs and the validation split (site_app.disclosure.policy, site_app.disclosure.validation_split). It is never sent
and never logged. Deleting it (with validation/split.json) starts the site afresh.

A simulated site (a virtual node of Flower's Simulation Engine: every site is the operator's data on one machine)
gets a secret derived from the run's seed and its name instead (``provide_simulated_secret``), so that two
simulations with the same data and seed validate on the same split and draw the same resamples. Only the
simulation's branch of site_app.settings.identity.site_paths calls it; a deployed site's node config names its
data path, which selects the deployment branch before anything else is looked at, so its secret is always random.
"""

import hashlib
import hmac
import os
import secrets
from pathlib import Path

SECRET_FILE = Path("secret") / "site-secret"
SECRET_BYTES = 32


def site_secret(work: Path) -> bytes:
    """The secret of the site whose work folder is `work`; created on first use (mode 0600, atomically)."""
    path = work / SECRET_FILE
    if not path.is_file():
        _create(path, secrets.token_bytes(SECRET_BYTES))
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)  # a copy or a restore may have widened it; the secret is the site user's alone
    secret = bytes.fromhex(path.read_text(encoding="utf-8").strip())
    if len(secret) != SECRET_BYTES:
        raise ValueError(
            f"{path} is not a site secret ({len(secret)} bytes, expected {SECRET_BYTES}); delete it together"
            " with validation/split.json and the site makes a new one"
        )
    return secret


def simulated_site_secret(run_seed: int, site_name: str) -> bytes:
    """The secret of simulated site ``site_name`` in a run with seed ``run_seed``: SHA-256 of both, SECRET_BYTES long.

    Anyone who knows the seed can recompute it; that is the point in a simulation and why no deployed site uses it.
    """
    return hashlib.sha256(f"oncofed simulated site/{run_seed}/{site_name}".encode()).digest()


def provide_simulated_secret(work: Path, run_seed: int, site_name: str) -> None:
    """Give a simulated site's work folder its derived secret unless it has one already (a resumed run's, or one a
    test put there): an existing secret is never replaced."""
    if not (work / SECRET_FILE).is_file():
        _create(work / SECRET_FILE, simulated_site_secret(run_seed, site_name))


def keyed_digest(secret: bytes, *parts: bytes | str) -> bytes:
    """HMAC-SHA256 of the parts under the site secret: unpredictable without the secret, stable with it."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        mac.update(len(data).to_bytes(8, "big") + data)
    return mac.digest()


def keyed_seed(secret: bytes, *parts: bytes | str) -> int:
    """A 64-bit seed for numpy's default_rng from keyed_digest."""
    return int.from_bytes(keyed_digest(secret, *parts)[:8], "big")


def _create(path: Path, secret: bytes) -> None:
    """Write ``secret`` under a temporary name (0600 from the start) and link it into place: if another
    process of the same site got there first, its secret wins and this one is discarded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secret.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # fails if the secret exists: never replaced once made
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
