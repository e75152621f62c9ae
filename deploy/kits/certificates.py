"""The federation's keys and certificates, made with the `cryptography` package (no openssl shelling out).

- a CA (EC P-384, self-signed) whose private key never leaves the coordinator kit;
- the SuperLink's TLS certificate, signed by the CA, with the coordinator's names plus 127.0.0.1 and localhost as
  SANs (SuperExec and `flwr` reach the SuperLink on loopback; the proxy in front of it verifies it as
  `localhost`, since nginx checks upstream names against DNS SANs only);
- one EC P-384 key pair per site in OpenSSH format: Flower's SuperNode authentication accepts only NIST EC
  keys (Ed25519 is refused) and reads them with `load_ssh_private_key`.
"""

import base64
import datetime as dt
import hashlib
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 1825
SERVER_DAYS = 365
EXPIRY_WARNING_DAYS = 30
"""Checks warn when a certificate expires within this many days."""


class KeyFileError(ValueError):
    """A key or certificate file holds something other than what it should; the message names the file."""


PRIVATE_KEY_MODE = 0o600
"""Private keys are written with models.shared.atomic.atomic_write_bytes(..., mode=PRIVATE_KEY_MODE): the temp file
has this mode before the key is written, so the key is never readable by other users."""


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key_pem(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, expected an EC private key")
    return key


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def load_certificate(path: Path) -> x509.Certificate:
    """A PEM certificate; a file that is not one raises KeyFileError naming the file."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as error:
        raise KeyFileError(f"{path} is not a PEM certificate ({error})") from None


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(federation: str, days: int = CA_DAYS) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA that may sign server certificates only (path length 0)."""
    key = new_private_key()
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{federation} CA"))
        .issuer_name(_name(f"{federation} CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, certificate


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


LOOPBACK_NAMES = ("127.0.0.1", "localhost")


def server_names(addresses: list[str]) -> list[str]:
    """The SANs a SuperLink certificate needs: the coordinator's public names plus loopback, each once."""
    return list(dict.fromkeys([*addresses, *LOOPBACK_NAMES]))


def make_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_certificate: x509.Certificate,
    names: list[str],
    days: int = SERVER_DAYS,
    not_before: dt.datetime | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A TLS server certificate for `names` (DNS names or IP addresses), signed by the CA."""
    key = new_private_key()
    start = not_before or (_now() - dt.timedelta(minutes=5))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(name) for name in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    return key, certificate


def certificate_names(certificate: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a certificate is valid for."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        *san.get_values_for_type(x509.DNSName),
        *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
    ]


def days_left(certificate: x509.Certificate) -> float:
    """Days until the certificate expires (negative once it has)."""
    return (certificate.not_valid_after_utc - _now()).total_seconds() / 86400


def is_signed_by(certificate: x509.Certificate, ca_certificate: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(ca_certificate)
    except (ValueError, TypeError, x509.InvalidSignature):
        return False
    return True


def site_key_openssh(key: ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes]:
    """(private key, public key) in OpenSSH format, the formats Flower's SuperNode authentication reads."""
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public + b"\n"


def load_site_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """A site's OpenSSH private key; anything else raises KeyFileError naming the file and what was found."""
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except OSError as error:
        raise KeyFileError(_unreadable(path, error)) from None
    except (ValueError, TypeError) as error:
        raise KeyFileError(f"{path} is not an unencrypted OpenSSH private key ({error})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}; Flower needs an EC (P-384) key")
    return key


def load_site_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise KeyFileError(_unreadable(path, error)) from None
    if b"PRIVATE KEY" in data:
        raise KeyFileError(
            f"{path} holds a PRIVATE key: a site sends only its public key (the .pub file `oncofed site keygen` "
            "wrote); the private key must never leave the hospital"
        )
    try:
        key = serialization.load_ssh_public_key(data)
    except (ValueError, TypeError) as error:
        raise KeyFileError(f"{path} is not an OpenSSH public key ({error})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}; Flower needs an EC (P-384) key")
    return key


def _unreadable(path: Path, error: OSError) -> str:
    """Why a key file cannot be read, with the user who tried (containers run as a fixed uid)."""
    if isinstance(error, PermissionError):
        return (
            f"{path} cannot be read by this user (uid {os.getuid()}): make the file owned by the user the site "
            f"runs as (`chown {os.getuid()} {path}`) and keep it private (`chmod 600 {path}`)"
        )
    if isinstance(error, FileNotFoundError):
        return f"{path} does not exist"
    return f"{path} cannot be read ({error.strerror or error})"


def key_fingerprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """The OpenSSH fingerprint (`ssh-keygen -lf` style: SHA256:base64 without padding)."""
    blob = base64.b64decode(
        public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).split()[1]
    )
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
