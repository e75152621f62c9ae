"""The federation's CA and the SuperLink's certificate as provisioning keeps them: kept when valid, created, renewed
or re-issued when they must be, and never re-created in a way that would invalidate the sites' kits."""

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.x509 import Certificate

from deploy.kits import certificates as certs
from deploy.kits.federation_spec import SpecError
from models.shared.atomic import atomic_write_bytes


def federation_ca(
    ca_dir: Path, root: Path, federation: str
) -> tuple[EllipticCurvePrivateKey | None, Certificate, bool]:
    """The CA (key or None, certificate, whether it was created now): from the CA folder (key and certificate),
    or, with the key kept offline, the certificate the coordinator kit in `root` holds; created in the CA folder
    for a new federation."""
    key_path, certificate_path = ca_dir / "ca.key", ca_dir / "ca.crt"
    kit_certificate = root / "certs" / "ca.crt"
    if certificate_path.is_file():
        certificate = certs.load_certificate(certificate_path)
        if kit_certificate.is_file() and kit_certificate.read_bytes() != certificate_path.read_bytes():
            raise SpecError(
                f"{certificate_path} is not the CA of the coordinator kit in {root} ({kit_certificate}): "
                "pass this federation's CA folder with --ca"
            )
        key = certs.load_private_key_pem(key_path) if key_path.is_file() else None
        if key is not None and key.public_key() != certificate.public_key():
            raise SpecError(
                f"{key_path} is not the key of {certificate_path}; restore the CA folder from its backup"
            )
        return key, certificate, False
    if key_path.exists():
        raise SpecError(
            f"{key_path} exists without {certificate_path}: the CA folder is incomplete; restore it from its "
            "backup (re-creating it would invalidate every site kit)"
        )
    if kit_certificate.is_file():
        return (
            None,
            certs.load_certificate(kit_certificate),
            False,
        )  # the CA folder is offline: fine unless signing
    key, certificate = certs.make_ca(federation)
    atomic_write_bytes(key_path, certs.private_key_pem(key), mode=certs.PRIVATE_KEY_MODE)
    atomic_write_bytes(certificate_path, certs.certificate_pem(certificate))
    ca_dir.chmod(0o700)
    return key, certificate, True


def superlink_certificate(
    root: Path,
    ca_dir: Path,
    ca_key: EllipticCurvePrivateKey | None,
    ca_certificate: Certificate,
    names: list[str],
) -> str | None:
    """Issue, renew or re-issue the SuperLink's certificate in the coordinator kit `root` when its names changed,
    it expires soon or another CA signed it; the reason it was (re)issued, or None when it was kept."""
    key_path, certificate_path = root / "certs" / "server.key", root / "certs" / "server.crt"
    ca_copy = root / "certs" / "ca.crt"
    if not ca_copy.is_file():
        atomic_write_bytes(ca_copy, certs.certificate_pem(ca_certificate))
    reason = "issued"
    if certificate_path.is_file() and key_path.is_file():
        current = certs.load_certificate(certificate_path)
        if set(certs.certificate_names(current)) != set(names):
            reason = f"re-issued: names changed to {', '.join(names)}"
        elif certs.days_left(current) < certs.EXPIRY_WARNING_DAYS:
            reason = f"renewed: it expired or expires within {certs.EXPIRY_WARNING_DAYS} days"
        elif not certs.is_signed_by(current, ca_certificate):
            reason = "re-issued: it was not signed by this federation's CA"
        else:
            return None
    if ca_key is None:
        raise SpecError(
            f"the SuperLink certificate must be {reason.split(':')[0]} ({reason}), which needs the CA's private key, "
            f"but {ca_dir / 'ca.key'} is not there: bring the CA folder back (--ca DIR) for this run, then keep it "
            "offline again"
        )
    key, certificate = certs.make_server_certificate(ca_key, ca_certificate, names)
    atomic_write_bytes(key_path, certs.private_key_pem(key), mode=certs.PRIVATE_KEY_MODE)
    atomic_write_bytes(certificate_path, certs.certificate_pem(certificate))
    return reason
