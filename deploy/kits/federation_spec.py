"""The federation spec `oncofed provision` reads: its name, the coordinator's addresses and ports, and the sites.

SPEC.toml::

    federation = "oncofed-brain"

    [coordinator]
    addresses = ["fl.example.org"]   # names or IPs the sites use to reach the coordinator (127.0.0.1 is added)
    port = 8443                      # the public port: the proxy (nginx, TLS), the only one sites reach
    superlink-port = 8444            # optional (default: port + 1): the SuperLink itself, on 127.0.0.1 only
    bind-host = "0.0.0.0"            # optional: the interface the proxy listens on
    allowed-networks = ["10.20.0.0/16", "192.0.2.7/32"]   # optional: only these reach the public port

    [sites.hospital-a]
    public-key = "keys/hospital-a.pub"   # the .pub the hospital sent; relative to this file

    [sites.hospital-b]
    public-key = "keys/hospital-b.pub"

`sites = ["hospital-a", "hospital-b"]` (names only) is accepted too: for sites provisioned earlier, sites added with
`--add-site NAME --public-key FILE`, or a test federation made with `--generate-site-keys`.
"""

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from deploy.kits import certificates as certs
from deploy.kits.contents import KitError, read_toml

NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
"""Federation and site names: they become file, unit and container names."""
HOSTNAME = re.compile(
    r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
WILDCARD_HOSTS = ("0.0.0.0", "::")


class SpecError(ValueError):
    """The spec or the output folder does not allow provisioning; the message names the file and the fix."""


@dataclass(frozen=True)
class FederationSpec:
    federation: str
    addresses: list[str]
    port: int
    bind_host: str
    sites: list[str]
    superlink_port: int = 0
    """0: port + 1."""
    public_keys: dict[str, Path] = field(default_factory=dict)
    """site → the public key file the hospital sent (absolute)."""
    allowed_networks: tuple[str, ...] = ()
    """The sites' networks (CIDR): when set, the proxy refuses every other client (empty: any address)."""

    @property
    def server_names(self) -> list[str]:
        extra = [] if self.bind_host in WILDCARD_HOSTS else [self.bind_host]
        return certs.server_names([*self.addresses, *extra])

    @property
    def coordinator_address(self) -> str:
        """What a site's site.toml points at: the first address, with the public port."""
        host = self.addresses[0]
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def internal_port(self) -> int:
        return self.superlink_port or self.port + 1


def _valid_host(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return bool(HOSTNAME.match(name))
    return True


def _port(value: object, path: Path, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise SpecError(
            f"{path}: [coordinator] `{key}` is {value!r}, expected a TCP port (1-65535), e.g. 8443"
        )
    return value


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
    port = _port(coordinator.get("port"), path, "port")
    superlink_port = _port(
        coordinator.get("superlink-port", port + 1 if port < 65535 else 0), path, "superlink-port"
    )
    if superlink_port == port:
        raise SpecError(
            f"{path}: [coordinator] `superlink-port` equals `port` ({port}): the proxy listens on `port`, the "
            "SuperLink on `superlink-port` (127.0.0.1 only); choose two ports"
        )
    bind_host = coordinator.get("bind-host", "0.0.0.0")
    if not isinstance(bind_host, str) or not _valid_host(bind_host):
        raise SpecError(
            f"{path}: [coordinator] `bind-host` is {bind_host!r}, expected an IP address "
            "(0.0.0.0 for every interface)"
        )
    allowed_networks = _networks(coordinator.get("allowed-networks", []), path)
    sites, public_keys = _read_sites(table.get("sites"), path)
    return FederationSpec(
        federation=federation,
        addresses=list(dict.fromkeys(addresses)),
        port=port,
        superlink_port=superlink_port,
        bind_host=bind_host,
        sites=sites,
        public_keys=public_keys,
        allowed_networks=allowed_networks,
    )


def _networks(value: object, path: Path) -> tuple[str, ...]:
    """`allowed-networks`: a list of CIDR networks (an address alone is one host), normalised."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SpecError(
            f'{path}: [coordinator] `allowed-networks` must be a list of networks, e.g. ["10.20.0.0/16"]'
        )
    networks = []
    for item in value:
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise SpecError(
                f"{path}: [coordinator] `allowed-networks` entry {item!r} is not a network (CIDR like 10.20.0.0/16, "
                "or one address)"
            ) from None
    return tuple(dict.fromkeys(networks))


def _read_sites(sites: object, path: Path) -> tuple[list[str], dict[str, Path]]:
    """`sites = [names]`, or `[sites.NAME] public-key = "file"` tables."""
    public_keys: dict[str, Path] = {}
    if isinstance(sites, dict):
        names = list(sites)
        for name, entry in sites.items():
            key = entry.get("public-key") if isinstance(entry, dict) else None
            if key is None:
                continue
            if not isinstance(key, str) or not key:
                raise SpecError(
                    f"{path}: [sites.{name}] `public-key` is {key!r}, expected the path of the .pub file the site "
                    'sent (e.g. "keys/hospital-a.pub", relative to this file)'
                )
            public_keys[name] = (path.parent / Path(key).expanduser()).resolve()
    elif isinstance(sites, list) and sites:
        names = sites
    else:
        raise SpecError(
            f"{path}: `sites` is {sites!r}: add one [sites.NAME] table per site, with the public key the site "
            'sent (public-key = "keys/NAME.pub")'
        )
    for site in names:
        if not isinstance(site, str) or not NAME.match(site):
            raise SpecError(
                f"{path}: site name {site!r} must be lower-case letters, digits and dashes "
                "(at most 63), starting and ending with a letter or digit"
            )
    duplicates = sorted({site for site in names if names.count(site) > 1})
    if duplicates:
        raise SpecError(f"{path}: site {duplicates[0]!r} is listed twice in `sites`")
    return list(names), public_keys
