"""A site's own key pair, made at the hospital: `oncofed site keygen --out DIR`.

The private key (`site.key`, EC P-384 in OpenSSH format, mode 0600: what Flower's SuperNode authentication reads)
never leaves the hospital; the hospital sends only `site.pub` to the coordinator, who names it in the federation
spec (`[sites.NAME] public-key = "…"`) or adds it with `oncofed provision … --add-site NAME --public-key FILE`.
`ssh-keygen -t ecdsa -b 384 -N "" -f DIR/site.key` makes the same kind of pair (its public half is site.key.pub).
"""

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from deploy.kits import certificates as certs
from models.shared.atomic import atomic_write_bytes

PRIVATE_NAME = "site.key"
PUBLIC_NAME = "site.pub"


class KeygenError(ValueError):
    """The key pair cannot be written there; the message names the file and the fix."""


@dataclass(frozen=True)
class SiteKeyPair:
    private: Path
    public: Path
    fingerprint: str


def generate_site_keys(out: Path, comment: str = "") -> SiteKeyPair:
    """Write a new pair into `out` (created 0700 if missing); never overwrites an existing key."""
    private, public = out / PRIVATE_NAME, out / PUBLIC_NAME
    for path in (private, public):
        if path.exists():
            raise KeygenError(
                f"{path} exists already: a site keeps one key (the coordinator registered its public half); "
                "choose another --out, or delete the old pair only if the coordinator is told of the new one"
            )
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not os.access(out, os.W_OK | os.X_OK):
        raise KeygenError(f"{out} is not writable by this user")
    key = certs.new_private_key()
    private_bytes, public_bytes = certs.site_key_openssh(key)
    if comment:
        public_bytes = public_bytes.rstrip(b"\n") + b" " + comment.encode("ascii", "replace") + b"\n"
    atomic_write_bytes(private, private_bytes, mode=certs.PRIVATE_KEY_MODE)
    atomic_write_bytes(public, public_bytes, 0o644)
    return SiteKeyPair(private=private, public=public, fingerprint=certs.key_fingerprint(key.public_key()))


def read_public_key(path: Path) -> tuple[bytes, str]:
    """A site's public key file as sent by the hospital: (its bytes, its fingerprint). KeyFileError names a
    private key sent by mistake, a key of the wrong kind, or an unreadable file."""
    key = certs.load_site_public_key(path)
    if not isinstance(key.curve, ec.SECP384R1):
        raise certs.KeyFileError(
            f"{path} is an EC key on {key.curve.name}; the federation uses P-384 (secp384r1): make the pair with "
            "`oncofed site keygen` or `ssh-keygen -t ecdsa -b 384`"
        )
    public = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public + b"\n", certs.key_fingerprint(key)
