"""What a kit holds and where: the coordinator kit and the site kits `oncofed provision` writes.

A kit is a folder with `kit.toml` (written by provisioning; never edited) and, for a site, `site.toml` (the
hospital fills in its paths and its key) and `approved-apps.toml` (the site's allow-list of apps). Reading a kit
checks that every file is there and parseable, and names the file and the fix when one is not. site.toml's schema
(its top-level keys and its [series]/[labels]/[limits] tables) belongs to site_app.settings.site_file, its one parser;
this module adds the checks only a kit can make.

    coordinator/                               sites/<site>/
      kit.toml                                   kit.toml
      certs/ca.crt server.crt server.key         site.toml    (edit: data-path, work-path, private-key)
      site-keys/<site>.pub                       approved-apps.toml (the release, pre-approved)
      revoked-sites.toml (once one is revoked)   certs/ca.crt
      release/<app>.fab                          release/<app>.fab
      proxy/nginx.conf                           packages/oncofed-*.whl requirements.txt
      flwr-home/config.toml                      start.sh oncofed-site.service compose.yaml Dockerfile README.md
      packages/ requirements.txt                 requirements.lock (every wheel's SHA-256) install.sh
                                                 wheels/ (with --wheelhouse: every wheel, an offline install)
                                                 (keys/site.key only in a test federation: --generate-site-keys)
      start.sh oncofed-coordinator.service
      compose.yaml Dockerfile README.md
      state/ logs/ runs/  (created when it runs)
    ca/ca.key ca.crt   (--ca: the CA, kept offline; needed only to issue or renew the SuperLink certificate)

No site's private key is in any of them: each hospital makes its own pair (`oncofed site keygen`) and sends only
the public half.
"""

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from data_prep.ingest_settings import IngestSettings
from models.shared.node_config import CONSENT_KEYS, POLICY_KEYS, PRIVACY_KEYS, NodeConfig, limit_key
from site_app.settings.site_file import (
    COORDINATOR,
    PRIVATE_KEY,
    RUNTIME_PORT,
    SiteSettingsError,
    read_site_file,
)

KIT_FILE = "kit.toml"
SITE_FILE = "site.toml"
CONNECTION = "oncofed"
"""The name of the SuperLink connection in the coordinator's flwr configuration."""
PLACEHOLDER = "CHANGE-ME"
"""site.toml values starting with this must be replaced before the site starts."""
DEFAULT_RUNTIME_PORT = 9094
REVOKED_FILE = "revoked-sites.toml"
APPROVED_APPS_FILE = "approved-apps.toml"


class KitError(ValueError):
    """A kit file is missing, unreadable or inconsistent; the message names the file and the fix."""


def read_toml(path: Path, what: str) -> dict:
    if not path.is_file():
        raise KitError(f"{path} is missing: {what}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise KitError(f"{path} is not valid TOML ({error}); fix the line or re-provision") from None


def _field(table: dict, key: str, kind: type, path: Path):
    value = table.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise KitError(f"{path}: `{key}` is {value!r}, expected a {kind.__name__}; re-provision the kit")
    return value


def _require_kind(manifest: dict, path: Path, kind: str) -> None:
    found = manifest.get("kind")
    if found != kind:
        raise KitError(
            f"{path} describes a {found!r} kit, expected a {kind!r} kit: pass the {kind} kit's folder"
        )


@dataclass(frozen=True)
class CoordinatorKit:
    root: Path
    federation: str
    port: int
    """The public port: the proxy (nginx, TLS), the only one sites reach."""
    superlink_port: int
    """The SuperLink's own port, on 127.0.0.1 only: `flwr`, `oncofed run` and the proxy use it."""
    bind_host: str
    """The interface the proxy listens on."""
    addresses: list[str]
    """The names and addresses sites use to reach the coordinator (the SuperLink certificate's SANs)."""
    sites: list[str]
    flwr_version: str
    release_fab: str
    """The release FAB, relative to the kit: what `oncofed run` submits and every site kit pre-approves."""
    release_sha256: str
    allowed_networks: tuple[str, ...] = ()
    """When set, the only client networks (CIDR) the proxy lets in (the federation spec's `allowed-networks`)."""

    @property
    def ca_certificate(self) -> Path:
        return self.root / "certs" / "ca.crt"

    @property
    def release(self) -> Path:
        return self.root / self.release_fab

    @property
    def revoked_file(self) -> Path:
        return self.root / REVOKED_FILE

    @property
    def proxy_folder(self) -> Path:
        return self.root / "proxy"

    @property
    def server_certificate(self) -> Path:
        return self.root / "certs" / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "certs" / "server.key"

    def site_public_key(self, site: str) -> Path:
        return self.root / "site-keys" / f"{site}.pub"

    @property
    def flwr_home(self) -> Path:
        return self.root / "flwr-home"

    @property
    def database(self) -> Path:
        return self.root / "state" / "superlink.db"

    @property
    def superlink_started(self) -> Path:
        """When the running SuperLink started (UTC, ISO 8601), written by `oncofed coordinator start`: a run
        submitted before it lost its ServerApp with the previous one."""
        return self.root / "state" / "superlink-started"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def local_address(self) -> str:
        """Where tools on the coordinator host reach the SuperLink itself (127.0.0.1 is in its certificate)."""
        return f"127.0.0.1:{self.superlink_port}"

    @property
    def public_local_address(self) -> str:
        """The proxy, as reached from this host: what a site sees, for checks."""
        host = "127.0.0.1" if self.bind_host in ("0.0.0.0", "::") else self.bind_host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def as_manifest(self) -> dict:
        return {
            "kind": "coordinator",
            "federation": self.federation,
            "flwr-version": self.flwr_version,
            "port": self.port,
            "superlink-port": self.superlink_port,
            "bind-host": self.bind_host,
            "addresses": self.addresses,
            "sites": self.sites,
            "release-fab": self.release_fab,
            "release-sha256": self.release_sha256,
            "allowed-networks": list(self.allowed_networks),
        }


def read_coordinator_kit(root: Path) -> CoordinatorKit:
    """The coordinator kit in `root`, with every file it needs present."""
    path = root / KIT_FILE
    manifest = read_toml(path, f"{root} is not a coordinator kit (make one with `oncofed provision`)")
    _require_kind(manifest, path, "coordinator")
    kit = CoordinatorKit(
        root=root.resolve(),
        federation=_field(manifest, "federation", str, path),
        port=_field(manifest, "port", int, path),
        superlink_port=_field(manifest, "superlink-port", int, path),
        bind_host=_field(manifest, "bind-host", str, path),
        addresses=list(_field(manifest, "addresses", list, path)),
        sites=list(_field(manifest, "sites", list, path)),
        flwr_version=_field(manifest, "flwr-version", str, path),
        release_fab=_field(manifest, "release-fab", str, path),
        release_sha256=_field(manifest, "release-sha256", str, path),
        allowed_networks=tuple(manifest.get("allowed-networks", [])),
    )
    needed = [
        kit.ca_certificate,
        kit.server_certificate,
        kit.server_key,
        kit.release,
        *(kit.site_public_key(site) for site in kit.sites),
    ]
    for file in needed:
        if not file.is_file():
            raise KitError(
                f"{file} is missing from the coordinator kit; re-run `oncofed provision` with the "
                "same spec and output folder to restore it"
            )
    return kit


@dataclass(frozen=True)
class SiteKitSettings:
    """site.toml: what the hospital fills in."""

    site_name: str
    coordinator: str
    """host:port of the coordinator's SuperLink."""
    data_path: Path
    work_path: Path
    min_report_cases: int
    """This site's own disclosure minimum (read by the ClientApp from the node config; the coordinator cannot
    lower it)."""
    runtime_port: int
    private_key: Path
    """The site's own private key (made at the hospital, never sent); absolute, or relative to the kit."""
    settings_file: Path
    """The site.toml these settings were read from: the ClientApp reads its [series], [labels] and [limits]."""
    ingest: IngestSettings
    """How the site's export is read: site.toml's [series], [labels] and [limits] (defaults when absent)."""
    policy: Mapping[str, int | float]
    """The site's other disclosure settings it sets (min-position-cases, min-train-cases, validation-fraction,
    min-lesion-mm3, share-local-model-for-evaluation, local-dp-noise-multiplier, local-dp-clipping-norm; absent keys take the ClientApp's defaults,
    site_app.disclosure.policy and model_sharing)."""
    limits: Mapping[str, int | float]
    """The site's limits on run settings it sets (site.toml's [limits], site_app.settings.limits)."""

    def node_config(self) -> dict[str, str | int | float]:
        """What the site's SuperNode passes to the ClientApp as `context.node_config` (models.shared.node_config.NodeConfig)."""
        return {
            NodeConfig.SITE_NAME: self.site_name,
            NodeConfig.DATA_PATH: str(self.data_path),
            NodeConfig.WORK_PATH: str(self.work_path),
            NodeConfig.SITE_CONFIG: str(self.settings_file),
            NodeConfig.MIN_REPORT_CASES: self.min_report_cases,
            **self.policy,
            **{limit_key(key): value for key, value in self.limits.items()},
        }

    @property
    def coordinator_host(self) -> str:
        return self.coordinator.rsplit(":", 1)[0].strip("[]")

    @property
    def coordinator_port(self) -> int:
        return int(self.coordinator.rsplit(":", 1)[1])


@dataclass(frozen=True)
class SiteKit:
    root: Path
    federation: str
    site_name: str
    flwr_version: str
    key_fingerprint: str
    """Fingerprint of the public key this kit was made for (the one the coordinator was given for this site)."""
    settings: SiteKitSettings
    test_key: bool = False
    """The coordinator generated this site's key (`provision --generate-site-keys`): test federations only."""

    @property
    def ca_certificate(self) -> Path:
        return self.root / "certs" / "ca.crt"

    @property
    def private_key(self) -> Path:
        key = self.settings.private_key
        return key if key.is_absolute() else self.root / key

    @property
    def allow_list(self) -> Path:
        return self.root / APPROVED_APPS_FILE

    @property
    def flwr_home(self) -> Path:
        return self.settings.work_path / "flower-home"

    @property
    def logs(self) -> Path:
        return self.settings.work_path / "logs"


def read_kit_settings(path: Path, site_name: str) -> SiteKitSettings:
    """site.toml, parsed by its one parser (site_app.settings.site_file), with the kit's own checks on top:
    placeholders, a changed site name, the coordinator's address form, absolute paths and the port's range (the
    parser checks the disclosure settings and limits as the ClientApp will)."""
    if not path.is_file():
        raise KitError(f"{path} is missing: the site settings file; copy it back from the kit you received")
    try:
        site_file = read_site_file(path, kit=True)
    except SiteSettingsError as error:
        raise KitError(str(error)) from None
    table = site_file.top_level
    for key in (NodeConfig.DATA_PATH, NodeConfig.WORK_PATH, COORDINATOR, PRIVATE_KEY):
        value = table[key]
        if isinstance(value, str) and value.startswith(PLACEHOLDER):
            raise KitError(f"{path}: `{key}` still holds the placeholder {value!r}; set it ({_HINTS[key]})")
    settings = SiteKitSettings(
        site_name=str(table[NodeConfig.SITE_NAME]),
        coordinator=str(table[COORDINATOR]),
        data_path=Path(str(table[NodeConfig.DATA_PATH])).expanduser(),
        work_path=Path(str(table[NodeConfig.WORK_PATH])).expanduser(),
        min_report_cases=int(table[NodeConfig.MIN_REPORT_CASES]),
        runtime_port=int(table[RUNTIME_PORT]),
        private_key=Path(str(table[PRIVATE_KEY])).expanduser(),
        settings_file=path.resolve(),
        ingest=site_file.ingest,
        policy={
            k: table[k]
            for k in (*POLICY_KEYS, *CONSENT_KEYS, *PRIVACY_KEYS)
            if k in table and k != NodeConfig.MIN_REPORT_CASES
        },
        limits=dict(site_file.limits),
    )
    if settings.site_name != site_name:
        raise KitError(
            f"{path}: `{NodeConfig.SITE_NAME}` is {settings.site_name!r} but this kit was made for {site_name!r}; "
            f"set it back to {site_name!r} (the coordinator knows the site by that name)"
        )
    host, sep, port = settings.coordinator.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise KitError(
            f"{path}: `{COORDINATOR}` is {settings.coordinator!r}, expected host:port "
            "(e.g. fl.example.org:8000)"
        )
    for key, folder in (
        (NodeConfig.DATA_PATH, settings.data_path),
        (NodeConfig.WORK_PATH, settings.work_path),
    ):
        if not folder.is_absolute():
            raise KitError(f"{path}: `{key}` is {str(folder)!r}, expected an absolute path")
    if not 1 <= settings.runtime_port <= 65535:
        raise KitError(f"{path}: `{RUNTIME_PORT}` is {settings.runtime_port}, expected a TCP port (1-65535)")
    return settings


_HINTS = {
    NodeConfig.DATA_PATH: "the folder holding this hospital's studies; it is only read",
    NodeConfig.WORK_PATH: "a folder the site may write to: cache, logs; not inside data-path",
    COORDINATOR: "host:port of the coordinator, from the coordinator's operator",
    PRIVATE_KEY: "the site.key this hospital made with `oncofed site keygen`; it never leaves this host",
}


def read_site_kit(root: Path) -> SiteKit:
    """The site kit in `root`, with its files present and site.toml filled in."""
    path = root / KIT_FILE
    manifest = read_toml(
        path, f"{root} is not a site kit (the coordinator makes one with `oncofed provision`)"
    )
    _require_kind(manifest, path, "site")
    site_name = _field(manifest, "site-name", str, path)
    kit = SiteKit(
        root=root.resolve(),
        federation=_field(manifest, "federation", str, path),
        site_name=site_name,
        flwr_version=_field(manifest, "flwr-version", str, path),
        key_fingerprint=_field(manifest, "key-fingerprint", str, path),
        settings=read_kit_settings(root / SITE_FILE, site_name),
        test_key=bool(manifest.get("test-key", False)),
    )
    if not kit.ca_certificate.is_file():
        raise KitError(
            f"{kit.ca_certificate} is missing from the site kit; ask the coordinator for the kit again"
        )
    return kit
