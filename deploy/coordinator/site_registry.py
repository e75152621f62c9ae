"""The sites' keys on the running SuperLink: register, find and unregister them over its Control API.

The Control API is reached on 127.0.0.1 only (the proxy never passes it), with Flower's own HTTP client for it
(`flwr/supercore/control/control_http_client.py`, `ControlHttpClient`: the client `flwr supernode register`,
`unregister` and `list` use). It is used in-process because `flwr supernode list --format json` leaves out the
nodes' public keys, and finding a site's node by its key is what revocation needs.

Flower keeps an unregistered node's row (status "unregistered") and its key stays unique, so a revoked key can
never be registered again on that database: the revocation file (deploy/coordinator/revocation.py) is what keeps a restart
with a fresh database from registering it.
"""

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.proto.control_pb2 import (  # pylint: disable=no-name-in-module
    ListNodesRequest,
    RegisterNodeRequest,
    UnregisterNodeRequest,
)
from flwr.supercore.control import ControlHttpClient
from flwr.supercore.error import ApiErrorCode
from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
from flwr.supercore.primitives.asymmetric import bytes_to_public_key, public_key_to_bytes

from deploy.kits import certificates as certs
from deploy.kits.contents import CoordinatorKit

UNREGISTERED = "unregistered"


class RegistryError(RuntimeError):
    """The SuperLink refused or did not answer; the message names the site and Flower's answer."""


@dataclass(frozen=True)
class Node:
    node_id: int
    status: str
    """Flower's node status: registered, online, offline or unregistered."""
    name: str
    public_key: ec.EllipticCurvePublicKey | None


@dataclass(frozen=True)
class Registration:
    site: str
    outcome: Literal["registered", "already registered"]
    node_id: int


class SiteRegistry:
    """The SuperLink's node table, through its Control API on 127.0.0.1."""

    def __init__(self, kit: CoordinatorKit, client: ControlHttpClient) -> None:
        self.kit = kit
        self.client = client

    def nodes(self) -> list[Node]:
        response = self._call("listing the nodes", lambda: self.client.ListNodes(ListNodesRequest()))
        return [
            Node(
                node_id=info.node_id,
                status=info.status,
                name=info.name,
                public_key=_key_or_none(info.public_key),
            )
            for info in response.nodes_info
        ]

    def nodes_of(self, site: str) -> list[Node]:
        """The nodes holding the site's registered key (any status), oldest first."""
        key = certs.load_site_public_key(self.kit.site_public_key(site))
        return [node for node in self.nodes() if node.public_key == key]

    def register(self, site: str) -> Registration:
        """Register the site's key; a key that holds a live node already is fine (a restart)."""
        key = certs.load_site_public_key(self.kit.site_public_key(site))
        live = [node for node in self.nodes_of(site) if node.status != UNREGISTERED]
        if live:
            return Registration(site, "already registered", live[0].node_id)
        if self.nodes_of(site):
            raise RegistryError(
                f"site {site!r}: its key was unregistered on this SuperLink (revoked earlier) and Flower never "
                "registers a key twice; a revoked site comes back only under a new name with a new key"
            )
        response = self._call(
            f"registering site {site!r} ({self.kit.site_public_key(site)})",
            lambda: self.client.RegisterNode(
                RegisterNodeRequest(public_key=public_key_to_bytes(key), name=site)
            ),
        )
        return Registration(site, "registered", response.node_id)

    def unregister(self, site: str) -> list[int]:
        """Unregister every live node with the site's key; returns their ids (empty: nothing was registered)."""
        removed = []
        for node in self.nodes_of(site):
            if node.status == UNREGISTERED:
                continue
            self._call(
                f"unregistering site {site!r} (node {node.node_id})",
                lambda node=node: self.client.UnregisterNode(UnregisterNodeRequest(node_id=node.node_id)),
            )
            removed.append(node.node_id)
        return removed

    @staticmethod
    def _call(what: str, call):
        try:
            return call()
        except httpx.HTTPStatusError as error:
            raise RegistryError(f"{what} failed: {_flower_error(error.response)}") from None
        except httpx.HTTPError as error:
            raise RegistryError(f"{what} failed: the SuperLink did not answer ({error})") from None


def coordinator_answers(kit: CoordinatorKit, timeout_s: float = 5.0) -> bool:
    """Whether the kit's SuperLink answers /health on 127.0.0.1 (verified TLS)."""
    context = ssl.create_default_context(cafile=str(kit.ca_certificate))
    try:
        with urllib.request.urlopen(
            f"https://{kit.local_address}/health", timeout=timeout_s, context=context
        ):
            return True
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def site_registry(kit: CoordinatorKit) -> Iterator[SiteRegistry]:
    """A registry client for the kit's SuperLink on 127.0.0.1 (verified against the federation's CA)."""
    client = ControlHttpClient.from_server_address(
        server_address=kit.local_address,
        insecure=False,
        root_certificates=kit.ca_certificate.read_bytes(),
        interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr CLI")],
    )
    try:
        yield SiteRegistry(kit, client)
    finally:
        client.close()


def _key_or_none(data: bytes) -> ec.EllipticCurvePublicKey | None:
    try:
        return bytes_to_public_key(data)
    except (ValueError, TypeError):
        return None


def _flower_error(response: httpx.Response) -> str:
    """Flower's error answer: `{"code": …, "message": …}` or similar; the raw text otherwise."""
    try:
        body = response.json()
    except (json.JSONDecodeError, ValueError):
        return f"HTTP {response.status_code}: {response.text[:500]}"
    code = body.get("code") if isinstance(body, dict) else None
    message = body.get("message") or body.get("detail") if isinstance(body, dict) else body
    name = (
        ApiErrorCode(code).name if isinstance(code, int) and code in ApiErrorCode._value2member_map_ else code
    )
    return f"HTTP {response.status_code} {name or ''}: {message}".strip()
