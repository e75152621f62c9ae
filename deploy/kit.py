"""What a kit holds and where: the coordinator kit and the site kits `oncofed provision` writes.

A kit is a folder with `kit.toml` (written by provisioning; never edited) and, for a site, `site.toml` (the
hospital fills in its paths). Reading a kit checks that every file is there and parseable, and names the file
and the fix when one is not.

    coordinator/                          sites/<site>/
      kit.toml                              kit.toml
      certs/ca.crt ca.key server.crt        site.toml              (edit: data-path, work-path)
            server.key                      certs/ca.crt
      site-keys/<site>.pub                  keys/site.key site.pub
      flwr-home/config.toml                 packages/oncofed-*.whl requirements.txt
      packages/ requirements.txt            start.sh oncofed-site.service compose.yaml Dockerfile README.md
      start.sh oncofed-coordinator.service
      compose.yaml Dockerfile README.md
      state/ logs/ runs/                  (created when it runs)
"""

import tomllib
from dataclasses import dataclass
from pathlib import Path

KIT_FILE = "kit.toml"
SITE_FILE = "site.toml"
CONNECTION = "oncofed"
"""The name of the SuperLink connection in the coordinator's flwr configuration."""
PLACEHOLDER = "CHANGE-ME"
"""site.toml values starting with this must be replaced before the site starts."""
DEFAULT_RUNTIME_PORT = 9094


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
    bind_host: str
    addresses: list[str]
    """The names and addresses sites use to reach the coordinator (the SuperLink certificate's SANs)."""
    sites: list[str]
    flwr_version: str

    @property
    def ca_certificate(self) -> Path:
        return self.root / "certs" / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "certs" / "ca.key"

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
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def local_address(self) -> str:
        """Where tools on the coordinator host reach the SuperLink (127.0.0.1 is always in the certificate)."""
        host = "127.0.0.1" if self.bind_host in ("0.0.0.0", "::", "127.0.0.1") else self.bind_host
        return f"{host}:{self.port}"

    def as_manifest(self) -> dict:
        return {
            "kind": "coordinator",
            "federation": self.federation,
            "flwr-version": self.flwr_version,
            "port": self.port,
            "bind-host": self.bind_host,
            "addresses": self.addresses,
            "sites": self.sites,
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
        bind_host=_field(manifest, "bind-host", str, path),
        addresses=list(_field(manifest, "addresses", list, path)),
        sites=list(_field(manifest, "sites", list, path)),
        flwr_version=_field(manifest, "flwr-version", str, path),
    )
    needed = [
        kit.ca_certificate,
        kit.ca_key,
        kit.server_certificate,
        kit.server_key,
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
    policy: dict[str, int | float]
    """The site's other disclosure settings and run-setting limits, as node-config keys (issue 10: `min-train-cases`,
    `min-position-cases`, `validation-fraction`, "limits.<key>"); absent keys take the ClientApp's defaults."""

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
    """Fingerprint of the public key the coordinator registered for this site."""
    settings: SiteKitSettings

    @property
    def ca_certificate(self) -> Path:
        return self.root / "certs" / "ca.crt"

    @property
    def private_key(self) -> Path:
        return self.root / "keys" / "site.key"

    @property
    def public_key(self) -> Path:
        return self.root / "keys" / "site.pub"

    @property
    def flwr_home(self) -> Path:
        return self.settings.work_path / "flower-home"

    @property
    def logs(self) -> Path:
        return self.settings.work_path / "logs"


def read_kit_settings(path: Path, site_name: str) -> SiteKitSettings:
    """site.toml, with placeholders, wrong types and a changed site name each named."""
    table = read_toml(path, "the site settings file; copy it back from the kit you received")
    for key in ("data-path", "work-path", "coordinator"):
        value = table.get(key)
        if isinstance(value, str) and value.startswith(PLACEHOLDER):
            raise KitError(f"{path}: `{key}` still holds the placeholder {value!r}; set it ({_HINTS[key]})")
    settings = SiteKitSettings(
        site_name=_field(table, "site-name", str, path),
        coordinator=_field(table, "coordinator", str, path),
        data_path=Path(_field(table, "data-path", str, path)).expanduser(),
        work_path=Path(_field(table, "work-path", str, path)).expanduser(),
        min_report_cases=_field(table, "min-report-cases", int, path),
        runtime_port=_field(table, "runtime-port", int, path),
        policy=_site_policy(table, path),
    )
    if settings.site_name != site_name:
        raise KitError(
            f"{path}: `site-name` is {settings.site_name!r} but this kit was made for {site_name!r}; "
            f"set it back to {site_name!r} (the coordinator knows the site by that name)"
        )
    host, sep, port = settings.coordinator.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise KitError(
            f"{path}: `coordinator` is {settings.coordinator!r}, expected host:port "
            "(e.g. fl.example.org:8000)"
        )
    for key, folder in (("data-path", settings.data_path), ("work-path", settings.work_path)):
        if not folder.is_absolute():
            raise KitError(f"{path}: `{key}` is {str(folder)!r}, expected an absolute path")
    if settings.min_report_cases < 1:
        raise KitError(f"{path}: `min-report-cases` is {settings.min_report_cases}, expected at least 1")
    if not 1 <= settings.runtime_port <= 65535:
        raise KitError(f"{path}: `runtime-port` is {settings.runtime_port}, expected a TCP port (1-65535)")
    return settings


def _site_policy(table: dict, path: Path) -> dict[str, int | float]:
    """site.toml's disclosure settings and [limits] as node-config keys, checked as the ClientApp will read them."""
    from models.disclosure_wire import LIMIT_KEYS, LIMITS_TABLE, MIN_REPORT_CASES, POLICY_KEYS
    from site_app.disclosure_policy import DisclosurePolicy
    from site_app.site_limits import SiteLimits

    limits = table.get(LIMITS_TABLE, {})
    policy = {key: table[key] for key in POLICY_KEYS if key in table and key != MIN_REPORT_CASES}
    policy |= {f"{LIMITS_TABLE}.{key}": limits[key] for key in LIMIT_KEYS if key in limits}
    try:
        DisclosurePolicy.from_configs({"data-path": "", **policy}, {})
        SiteLimits.from_node_config(policy)
    except ValueError as error:
        raise KitError(f"{path}: {str(error).replace('node config ', '')}") from None
    return policy


_HINTS = {
    "data-path": "the folder holding this hospital's studies; it is only read",
    "work-path": "a folder the site may write to: cache, logs; not inside data-path",
    "coordinator": "host:port of the coordinator, from the coordinator's operator",
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
    )
    for file in (kit.ca_certificate, kit.private_key):
        if not file.is_file():
            raise KitError(f"{file} is missing from the site kit; ask the coordinator for the kit again")
    return kit
