"""`oncofed provision SPEC.toml --out DIR [--ca CA_DIR]`: a federation's CA, the coordinator kit and one kit per site.

Re-running with the same output folder is safe: the CA and existing site kits are kept byte for byte, new sites
get new kits, and the SuperLink certificate is re-issued only when the addresses changed or it expires soon.

The CA lives in its own folder (`--ca`, default DIR/ca, created on first use): keep it offline. Its key is needed
only to issue or renew the SuperLink certificate; adding a site needs only the CA certificate, which the coordinator
kit holds. Each hospital makes its own key pair (`oncofed site keygen`) and sends only the public half: no site's
private key is ever written here (except with `--generate-site-keys`, for test federations).

SPEC.toml's format (federation name, the coordinator's addresses and ports, the sites and their public keys, an
optional allow-list of site networks) is in deploy/kits/federation_spec.py.
"""

import shutil
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import tomli_w
from cryptography.x509 import Certificate

from deploy.flower_env import app_directory, write_connection
from deploy.kits import certificates as certs
from deploy.kits.app_approval import ALLOW_LIST_FILE, approval_of, write_allow_list
from deploy.kits.contents import CONNECTION, KIT_FILE, CoordinatorKit, KitError, read_toml
from deploy.kits.federation_ca import federation_ca, superlink_certificate
from deploy.kits.federation_spec import NAME, FederationSpec, SpecError
from deploy.kits.operator_files import Release, coordinator_files, site_files, write_kit_files
from deploy.kits.proxy_config import write_proxy_config
from deploy.kits.release_fab import RELEASE_DIR, FabInfo, build_fab, read_fab, write_release
from deploy.kits.site_keys import read_public_key
from deploy.kits.site_package import build_wheel, requirements_text
from deploy.kits.wheelhouse import (
    LOCK_FILE,
    WHEELS_DIR,
    LockedWheel,
    WheelSource,
    copy_wheels,
    lock_text,
    locked_wheels,
    runtime_pins,
)
from models.shared.atomic import atomic_write_bytes

MANIFEST_HEADER = "# Written by `oncofed provision`: do not edit; re-run provision instead.\n"
TEST_KEY_PATH = "keys/site.key"
"""Where `--generate-site-keys` puts a test site's private key, relative to its kit."""


@dataclass
class ProvisionReport:
    """What a provisioning run did, for the command to print."""

    coordinator: Path
    ca_folder: Path
    ca: str = "kept"
    server_certificate: str = "kept"
    release: str = "kept"
    release_sha256: str = ""
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    not_in_spec: list[str] = field(default_factory=list)
    """Sites provisioned earlier and missing from this spec: kept (provisioning never removes a site)."""
    generated_keys: list[str] = field(default_factory=list)
    """Sites whose private key was generated here (--generate-site-keys): test federations only."""
    coordinator_made_keys: list[str] = field(default_factory=list)
    """Kept sites whose kit holds a key the coordinator made (provisioned before sites made their own)."""
    kit_bytes: dict[str, int] = field(default_factory=dict)
    """Size of each new site kit."""
    wheel_count: int = 0
    """Wheels in each new site kit's wheels/ (0 without --wheelhouse)."""
    locked: int = 0
    """Entries of each new site kit's requirements.lock (0 when no lock was written)."""


def provision(
    spec: FederationSpec,
    out: Path,
    ca_dir: Path | None = None,
    add_sites: dict[str, Path] | None = None,
    generate_site_keys: bool = False,
    wheels: WheelSource | None = None,
) -> ProvisionReport:
    """Write or extend the kits of `spec` under `out` (coordinator/ and sites/<site>/), the CA in `ca_dir`.

    `add_sites` adds sites with their public key files (`--add-site NAME --public-key FILE`). `wheels`: where
    the site kits' hashed lock (and with `wheels.wheelhouse` their wheels/) come from; None writes neither
    (kits for tests that never install them).
    """
    root = out.resolve() / "coordinator"
    ca_dir = (ca_dir or out / "ca").resolve()
    report = ProvisionReport(coordinator=root, ca_folder=ca_dir)
    previous = _previous_manifest(root, spec)
    flwr_version = _flwr_version(root, previous)
    sites, public_keys = _sites_and_keys(spec, add_sites or {})
    sites_root = out.resolve() / "sites"
    new_keys = _new_site_keys(
        root, sites_root, sites, public_keys, generate_site_keys
    )  # before any file is written

    ca_key, ca_certificate, ca_created = federation_ca(ca_dir, root, spec.federation)
    if ca_created:
        report.ca = "created"
    reissued = superlink_certificate(root, ca_dir, ca_key, ca_certificate, spec.server_names)
    if reissued:
        report.server_certificate = reissued
    release = Release(wheel=_wheel(root), flwr_version=flwr_version)
    fab_path, fab = _release_fab(root, previous, report)
    new_sites = [site for site in sites if not (sites_root / site / KIT_FILE).is_file()]
    locked = _locked(release.wheel, wheels) if wheels is not None and new_sites else None

    for site in sites:
        if (sites_root / site / KIT_FILE).is_file():
            _keep_site(root, sites_root / site, site, public_keys.get(site), report)
            report.kept.append(site)
        else:
            _new_site(
                root, sites_root / site, site, spec, release, ca_certificate, fab_path, fab, new_keys[site]
            )
            _add_lock(
                sites_root / site, release.wheel, locked, wheels is not None and wheels.wheelhouse, report
            )
            report.created.append(site)
            if new_keys[site].private is not None:
                report.generated_keys.append(site)
    earlier = list(previous.get("sites", [])) if previous else []
    report.not_in_spec = [site for site in earlier if site not in sites]

    kit = CoordinatorKit(
        root=root,
        federation=spec.federation,
        port=spec.port,
        superlink_port=spec.internal_port,
        bind_host=spec.bind_host,
        allowed_networks=spec.allowed_networks,
        addresses=spec.server_names,
        sites=[*earlier, *(s for s in sites if s not in earlier)],
        flwr_version=flwr_version,
        release_fab=str(fab_path.relative_to(root)),
        release_sha256=fab.sha256,
    )
    write_kit_files(root, coordinator_files(release, kit))
    atomic_write_bytes(root / "requirements.txt", requirements_text(release.wheel).encode())
    write_proxy_config(kit)
    kit.flwr_home.mkdir(parents=True, exist_ok=True)
    write_connection(kit.flwr_home, CONNECTION, kit.local_address, kit.ca_certificate)
    atomic_write_bytes(root / KIT_FILE, (MANIFEST_HEADER + tomli_w.dumps(kit.as_manifest())).encode())
    return report


def _locked(wheel: Path, wheels: WheelSource) -> list[LockedWheel]:
    """The dependencies' wheels, hashed (fetched into the cache when missing); one list for all new kits."""
    return locked_wheels(runtime_pins(wheel), wheels.cache)


def _add_lock(
    kit_dir: Path, wheel: Path, locked: list[LockedWheel] | None, wheelhouse: bool, report: ProvisionReport
) -> None:
    """requirements.lock (and wheels/) into a new site kit; its size and counts into the report."""
    if locked is not None:
        text = lock_text(locked, wheel, f"packages/{wheel.name}")
        atomic_write_bytes(kit_dir / LOCK_FILE, text.encode())
        report.locked = len(locked) + 1
        if wheelhouse:
            copy_wheels(locked, kit_dir / WHEELS_DIR)
            report.wheel_count = len(locked) + 1  # and the oncofed wheel in packages/
    report.kit_bytes[kit_dir.name] = sum(p.stat().st_size for p in kit_dir.rglob("*") if p.is_file())


def _sites_and_keys(spec: FederationSpec, add_sites: dict[str, Path]) -> tuple[list[str], dict[str, Path]]:
    sites, keys = list(spec.sites), dict(spec.public_keys)
    for site, key in add_sites.items():
        if not NAME.match(site):
            raise SpecError(
                f"--add-site {site!r}: a site name is lower-case letters, digits and dashes (at most 63)"
            )
        if site in keys and keys[site].resolve() != key.resolve():
            raise SpecError(f"--add-site {site}: the spec names another public key for it ({keys[site]})")
        keys[site] = key.resolve()
        if site not in sites:
            sites.append(site)
    return sites, keys


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
    if (root / "certs" / "ca.key").exists():
        raise SpecError(
            f"{root / 'certs' / 'ca.key'}: this coordinator kit still holds the CA's private key (provisioned by "
            "an earlier OncoFed). Move certs/ca.key and a copy of certs/ca.crt into the CA folder (--ca), keep "
            "that folder offline, and re-run provision"
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


def _wheel(root: Path) -> Path:
    """The package every kit of this federation installs: built once, reused when sites are added later."""
    existing = sorted((root / "packages").glob("oncofed-*.whl"))
    return existing[-1] if existing else build_wheel(root / "packages")


def _release_fab(root: Path, previous: dict | None, report: ProvisionReport) -> tuple[Path, FabInfo]:
    """The release FAB: built once from this source tree, then kept (a new release goes through `run --fab`)."""
    recorded = previous.get("release-fab") if previous else None
    if isinstance(recorded, str) and (root / recorded).is_file():
        path = root / recorded
        _, info = read_fab(path)
        if previous.get("release-sha256") != info.sha256:
            raise SpecError(
                f"{path} has sha256 {info.sha256}, but {root / KIT_FILE} records {previous.get('release-sha256')}: "
                "the release was changed after provisioning; restore it from the kit's backup"
            )
    else:
        path = write_release(root, build_fab(app_directory()))
        _, info = read_fab(path)
        report.release = "built"
    report.release_sha256 = info.sha256
    return path, info


@dataclass(frozen=True)
class _SiteKey:
    public: bytes
    fingerprint: str
    private: bytes | None = None
    """Only for --generate-site-keys."""


def _new_site_keys(
    root: Path, sites_root: Path, sites: list[str], public_keys: dict[str, Path], generate: bool
) -> dict[str, _SiteKey]:
    """The public key of every new site (from the file its hospital sent, or generated for a test federation);
    one key per site across the whole federation."""
    fingerprints = {}
    for pub in sorted((root / "site-keys").glob("*.pub")):
        fingerprints[certs.key_fingerprint(certs.load_site_public_key(pub))] = pub.stem
    keys = {}
    for site in sites:
        if (sites_root / site / KIT_FILE).is_file():
            continue
        if site in public_keys:
            try:
                public, fingerprint = read_public_key(public_keys[site])
            except certs.KeyFileError as error:
                raise SpecError(f"site {site!r}: {error}") from None
            keys[site] = _SiteKey(public, fingerprint)
        elif generate:
            key = certs.new_private_key()
            private, public = certs.site_key_openssh(key)
            keys[site] = _SiteKey(public, certs.key_fingerprint(key.public_key()), private)
        else:
            raise SpecError(
                f"site {site!r} has no public key: ask the hospital to run `oncofed site keygen --out DIR` and send "
                f'DIR/site.pub, then add [sites.{site}] public-key = "…" to the spec (or --add-site {site} '
                "--public-key FILE). A test federation may use --generate-site-keys instead"
            )
        owner = fingerprints.get(keys[site].fingerprint)
        if owner is not None:
            raise SpecError(
                f"site {site!r}: its public key {keys[site].fingerprint} is already the key of site {owner!r}; "
                "every site needs its own key pair"
            )
        fingerprints[keys[site].fingerprint] = site
    return keys


def _keep_site(root: Path, kit_dir: Path, site: str, named_key: Path | None, report: ProvisionReport) -> None:
    """An existing site kit stays as it is; the coordinator's copy of its public key is restored from the kit
    (older kits) if lost, and must be the key the kit was made for."""
    coordinator_copy = root / "site-keys" / f"{site}.pub"
    expected = read_toml(kit_dir / KIT_FILE, "").get("key-fingerprint")
    if (kit_dir / "keys" / "site.key").is_file():
        report.coordinator_made_keys.append(site)
    if not coordinator_copy.is_file():
        public = named_key if named_key is not None else kit_dir / "keys" / "site.pub"
        if not public.is_file():
            raise SpecError(
                f"{coordinator_copy} is missing and the spec names no public key for site {site!r}: add "
                f'[sites.{site}] public-key = "…" with the .pub file the site sent, and re-run provision'
            )
        atomic_write_bytes(coordinator_copy, read_public_key(public)[0])
    try:
        found = certs.key_fingerprint(certs.load_site_public_key(coordinator_copy))
    except certs.KeyFileError as error:
        raise SpecError(
            f"{error}; delete it and re-run provision with the site's .pub file in the spec"
        ) from None
    if found != expected:
        raise SpecError(
            f"{coordinator_copy} ({found}) is not the key of the kit in {kit_dir} ({expected}); delete "
            "it and re-run provision with the site's .pub file in the spec"
        )
    if named_key is not None:
        try:
            named = read_public_key(named_key)[1]
        except certs.KeyFileError as error:
            raise SpecError(f"site {site!r}: {error}") from None
        if named != expected:
            raise SpecError(
                f"site {site!r} was provisioned for the key {expected}, but the spec names {named_key} ({named}). "
                f"A site's key is not replaced in place: revoke it (`oncofed coordinator revoke --site {site}`) "
                "and add the site under a new name"
            )


def _new_site(
    root: Path,
    kit_dir: Path,
    site: str,
    spec: FederationSpec,
    release: Release,
    ca_certificate: Certificate,
    fab_path: Path,
    fab: FabInfo,
    key: _SiteKey,
) -> None:
    """Write the kit in a hidden folder and rename it into place: a kit folder is never half-written."""
    kit_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=kit_dir.parent, prefix=f".{site}."))
    try:
        if key.private is not None:
            atomic_write_bytes(staging / TEST_KEY_PATH, key.private, mode=certs.PRIVATE_KEY_MODE)
        atomic_write_bytes(staging / "certs" / "ca.crt", certs.certificate_pem(ca_certificate))
        (staging / "packages").mkdir()
        shutil.copy2(release.wheel, staging / "packages" / release.wheel.name)
        (staging / RELEASE_DIR).mkdir()
        shutil.copy2(fab_path, staging / RELEASE_DIR / fab_path.name)
        write_allow_list(
            staging / ALLOW_LIST_FILE,
            [
                approval_of(
                    fab,
                    "oncofed provision",
                    f"release of federation {spec.federation} ({RELEASE_DIR}/{fab_path.name}), pre-approved by "
                    "this kit; revoke it with `oncofed site revoke-app` if the site does not accept it",
                )
            ],
        )
        atomic_write_bytes(staging / "requirements.txt", requirements_text(release.wheel).encode())
        write_kit_files(
            staging,
            site_files(
                release,
                spec.federation,
                site,
                spec.coordinator_address,
                spec.server_names,
                key.fingerprint,
                fab,
                TEST_KEY_PATH if key.private is not None else None,
            ),
        )
        manifest = {
            "kind": "site",
            "federation": spec.federation,
            "site-name": site,
            "flwr-version": release.flwr_version,
            "key-fingerprint": key.fingerprint,
            "release-sha256": fab.sha256,
            "test-key": key.private is not None,
        }
        atomic_write_bytes(staging / KIT_FILE, (MANIFEST_HEADER + tomli_w.dumps(manifest)).encode())
        atomic_write_bytes(root / "site-keys" / f"{site}.pub", key.public)
        staging.rename(kit_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
