"""`oncofed provision SPEC.toml --out DIR`: a federation's CA, the coordinator kit and one kit per site.

Re-running with the same output folder is safe: the CA and existing site kits are kept byte for byte, new sites
get new kits, and the SuperLink certificate is re-issued only when the addresses changed or it expires soon.

SPEC.toml::

    federation = "oncofed-brain"
    sites = ["hospital-a", "hospital-b", "hospital-c"]

    [coordinator]
    addresses = ["fl.example.org"]   # names or IPs the sites use to reach the coordinator (127.0.0.1 is added)
    port = 8000
    bind-host = "0.0.0.0"            # optional: the interface the SuperLink listens on
"""

import ipaddress
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import tomli_w
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.x509 import Certificate

from deploy import certificates as certs
from deploy.flower_env import write_connection
from deploy.kit import CONNECTION, KIT_FILE, CoordinatorKit, KitError, read_toml
from deploy.kit_files import Release, coordinator_files, site_files, write_kit_files
from deploy.site_package import build_wheel, requirements_text
from models.atomic import atomic_write_bytes

NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
"""Federation and site names: they become file, unit and container names."""
HOSTNAME = re.compile(
    r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
WILDCARD_HOSTS = ("0.0.0.0", "::")
MANIFEST_HEADER = "# Written by `oncofed provision`: do not edit; re-run provision instead.\n"


class SpecError(ValueError):
    """The spec or the output folder does not allow provisioning; the message names the file and the fix."""


@dataclass(frozen=True)
class FederationSpec:
    federation: str
    addresses: list[str]
    port: int
    bind_host: str
    sites: list[str]

    @property
    def server_names(self) -> list[str]:
        extra = [] if self.bind_host in WILDCARD_HOSTS else [self.bind_host]
        return certs.server_names([*self.addresses, *extra])

    @property
    def coordinator_address(self) -> str:
        """What a site's site.toml points at: the first address, with the port."""
        host = self.addresses[0]
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


def _valid_host(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return bool(HOSTNAME.match(name))
    return True


def read_spec(path: Path) -> FederationSpec:
    """The spec file, every field checked; each problem names the file and the key."""
    try:
        table = read_toml(path, "the federation spec to provision (see `oncofed provision --help`)")
    except KitError as error:
        raise SpecError(str(error)) from None
    federation = table.get("federation")
    if not isinstance(federation, str) or not NAME.match(federation):
        raise SpecError(
            f"{path}: `federation` is {federation!r}, expected a name of lower-case letters, digits "
            'and dashes (e.g. "oncofed-brain")'
        )
    coordinator = table.get("coordinator")
    if not isinstance(coordinator, dict):
        raise SpecError(f"{path}: no [coordinator] table; add one with `addresses` and `port`")
    addresses = coordinator.get("addresses")
    if not isinstance(addresses, list) or not addresses or not all(isinstance(a, str) for a in addresses):
        raise SpecError(
            f"{path}: [coordinator] `addresses` is {addresses!r}, expected a non-empty list of the "
            "DNS names or IP addresses sites use to reach the coordinator"
        )
    for address in addresses:
        if not _valid_host(address):
            raise SpecError(
                f"{path}: [coordinator] address {address!r} is neither a DNS name nor an IP address "
                '(no scheme or port: "fl.example.org", "10.0.0.5")'
            )
    port = coordinator.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise SpecError(f"{path}: [coordinator] `port` is {port!r}, expected a TCP port (1-65535), e.g. 8000")
    bind_host = coordinator.get("bind-host", "0.0.0.0")
    if not isinstance(bind_host, str) or not _valid_host(bind_host):
        raise SpecError(
            f"{path}: [coordinator] `bind-host` is {bind_host!r}, expected an IP address "
            "(0.0.0.0 for every interface)"
        )
    sites = table.get("sites")
    if not isinstance(sites, list) or not sites:
        raise SpecError(f'{path}: `sites` is {sites!r}, expected a list of site names, e.g. ["hospital-a"]')
    for site in sites:
        if not isinstance(site, str) or not NAME.match(site):
            raise SpecError(
                f"{path}: site name {site!r} must be lower-case letters, digits and dashes "
                "(at most 63), starting and ending with a letter or digit"
            )
    duplicates = sorted({site for site in sites if sites.count(site) > 1})
    if duplicates:
        raise SpecError(f"{path}: site {duplicates[0]!r} is listed twice in `sites`")
    return FederationSpec(
        federation=federation,
        addresses=list(dict.fromkeys(addresses)),
        port=port,
        bind_host=bind_host,
        sites=list(sites),
    )


@dataclass
class ProvisionReport:
    """What a provisioning run did, for the command to print."""

    coordinator: Path
    ca: str = "kept"
    server_certificate: str = "kept"
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    not_in_spec: list[str] = field(default_factory=list)
    """Sites provisioned earlier and missing from this spec: kept (provisioning never removes a site)."""


def provision(spec: FederationSpec, out: Path) -> ProvisionReport:
    """Write or extend the kits of `spec` under `out` (coordinator/ and sites/<site>/)."""
    root = out.resolve() / "coordinator"
    report = ProvisionReport(coordinator=root)
    previous = _previous_manifest(root, spec)
    flwr_version = _flwr_version(root, previous)

    ca_key, ca_certificate = _ca(root, spec.federation, report)
    _server_certificate(root, ca_key, ca_certificate, spec.server_names, report)
    release = Release(wheel=_wheel(root), flwr_version=flwr_version)

    sites_root = out.resolve() / "sites"
    for site in spec.sites:
        if (sites_root / site / KIT_FILE).is_file():
            _keep_site(root, sites_root / site, site)
            report.kept.append(site)
        else:
            _new_site(root, sites_root / site, site, spec, release, ca_certificate)
            report.created.append(site)
    earlier = list(previous.get("sites", [])) if previous else []
    report.not_in_spec = [site for site in earlier if site not in spec.sites]

    kit = CoordinatorKit(
        root=root,
        federation=spec.federation,
        port=spec.port,
        bind_host=spec.bind_host,
        addresses=spec.server_names,
        sites=[*earlier, *(s for s in spec.sites if s not in earlier)],
        flwr_version=flwr_version,
    )
    write_kit_files(root, coordinator_files(release, spec.federation, spec.port, spec.server_names))
    atomic_write_bytes(root / "requirements.txt", requirements_text(release.wheel).encode())
    kit.flwr_home.mkdir(parents=True, exist_ok=True)
    write_connection(kit.flwr_home, CONNECTION, kit.local_address, kit.ca_certificate)
    atomic_write_bytes(root / KIT_FILE, (MANIFEST_HEADER + tomli_w.dumps(kit.as_manifest())).encode())
    return report


def _previous_manifest(root: Path, spec: FederationSpec) -> dict | None:
    path = root / KIT_FILE
    if not path.is_file():
        if root.exists() and any(root.iterdir()):
            raise SpecError(
                f"{root} exists but holds no {KIT_FILE}: it is not a coordinator kit; "
                "choose an empty --out folder"
            )
        return None
    try:
        manifest = read_toml(path, "")
    except KitError as error:
        raise SpecError(str(error)) from None
    if manifest.get("federation") != spec.federation:
        raise SpecError(
            f"{path} belongs to federation {manifest.get('federation')!r}, the spec names "
            f"{spec.federation!r}: use another --out for another federation"
        )
    if manifest.get("port") != spec.port:
        raise SpecError(
            f"{path}: the federation was provisioned with port {manifest.get('port')}, the spec says "
            f"{spec.port}; existing site kits point at the old port: keep it, or provision anew"
        )
    return manifest


def _flwr_version(root: Path, previous: dict | None) -> str:
    installed = version("flwr")
    if previous and previous.get("flwr-version") != installed:
        raise SpecError(
            f"{root / KIT_FILE}: the federation was provisioned for flwr {previous.get('flwr-version')}"
            f" but flwr {installed} is installed here; provision with the same flwr version"
        )
    return installed


def _ca(root: Path, federation: str, report: ProvisionReport) -> tuple[EllipticCurvePrivateKey, Certificate]:
    key_path, certificate_path = root / "certs" / "ca.key", root / "certs" / "ca.crt"
    if key_path.is_file() and certificate_path.is_file():
        return certs.load_private_key_pem(key_path), certs.load_certificate(certificate_path)
    if key_path.exists() or certificate_path.exists():
        present = key_path if key_path.exists() else certificate_path
        raise SpecError(
            f"{present} exists without its pair in {root / 'certs'}: the CA is incomplete; restore "
            "it from a backup (re-creating it would invalidate every site kit)"
        )
    key, certificate = certs.make_ca(federation)
    atomic_write_bytes(key_path, certs.private_key_pem(key), mode=certs.PRIVATE_KEY_MODE)
    atomic_write_bytes(certificate_path, certs.certificate_pem(certificate))
    report.ca = "created"
    return key, certificate


def _server_certificate(
    root: Path,
    ca_key: EllipticCurvePrivateKey,
    ca_certificate: Certificate,
    names: list[str],
    report: ProvisionReport,
) -> None:
    key_path, certificate_path = root / "certs" / "server.key", root / "certs" / "server.crt"
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
            return
    key, certificate = certs.make_server_certificate(ca_key, ca_certificate, names)
    atomic_write_bytes(key_path, certs.private_key_pem(key), mode=certs.PRIVATE_KEY_MODE)
    atomic_write_bytes(certificate_path, certs.certificate_pem(certificate))
    report.server_certificate = reason


def _wheel(root: Path) -> Path:
    """The package every kit of this federation installs: built once, reused when sites are added later."""
    existing = sorted((root / "packages").glob("oncofed-*.whl"))
    return existing[-1] if existing else build_wheel(root / "packages")


def _keep_site(root: Path, kit_dir: Path, site: str) -> None:
    """An existing site kit stays as it is; the coordinator's copy of its public key is restored if lost, and
    must be the key the kit was made with."""
    coordinator_copy = root / "site-keys" / f"{site}.pub"
    if not coordinator_copy.is_file():
        public = kit_dir / "keys" / "site.pub"
        if not public.is_file():
            raise SpecError(
                f"{coordinator_copy} and {public} are both missing: site {site!r} cannot be registered; "
                f"delete {kit_dir} and re-run provision to give it a new kit"
            )
        atomic_write_bytes(coordinator_copy, public.read_bytes())
    expected = read_toml(kit_dir / KIT_FILE, "").get("key-fingerprint")
    try:
        found = certs.key_fingerprint(certs.load_site_public_key(coordinator_copy))
    except certs.KeyFileError as error:
        raise SpecError(f"{error}; delete it and re-run provision to restore it from {kit_dir}") from None
    if found != expected:
        raise SpecError(
            f"{coordinator_copy} ({found}) is not the key of the kit in {kit_dir} ({expected}); delete "
            "it and re-run provision to restore it from the kit"
        )


def _new_site(
    root: Path, kit_dir: Path, site: str, spec: FederationSpec, release: Release, ca_certificate: Certificate
) -> None:
    """Write the kit in a hidden folder and rename it into place: a kit folder is never half-written."""
    kit_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=kit_dir.parent, prefix=f".{site}."))
    try:
        key = certs.new_private_key()
        private, public = certs.site_key_openssh(key)
        fingerprint = certs.key_fingerprint(key.public_key())
        atomic_write_bytes(staging / "keys" / "site.key", private, mode=certs.PRIVATE_KEY_MODE)
        atomic_write_bytes(staging / "keys" / "site.pub", public)
        atomic_write_bytes(staging / "certs" / "ca.crt", certs.certificate_pem(ca_certificate))
        (staging / "packages").mkdir()
        shutil.copy2(release.wheel, staging / "packages" / release.wheel.name)
        atomic_write_bytes(staging / "requirements.txt", requirements_text(release.wheel).encode())
        write_kit_files(
            staging,
            site_files(
                release, spec.federation, site, spec.coordinator_address, spec.server_names, fingerprint
            ),
        )
        manifest = {
            "kind": "site",
            "federation": spec.federation,
            "site-name": site,
            "flwr-version": release.flwr_version,
            "key-fingerprint": fingerprint,
        }
        atomic_write_bytes(staging / KIT_FILE, (MANIFEST_HEADER + tomli_w.dumps(manifest)).encode())
        atomic_write_bytes(root / "site-keys" / f"{site}.pub", public)
        staging.rename(kit_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
