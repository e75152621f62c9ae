"""The nginx configuration of the coordinator's public port, written into the coordinator kit by `oncofed provision`
and again by every `oncofed coordinator start` (deploy/coordinator/proxy.py runs nginx with it).

Flower 1.42's SuperLink serves the Fleet API (SuperNodes), the Control API (`flwr run`, `flwr ls`, node
registration: no account authentication in open-source Flower) and the Runtime API (ServerApp/SuperExec tasks)
on one port. Sites must reach the Fleet API, so the SuperLink listens on 127.0.0.1 only and nginx, on the public
port, forwards exactly `POST /v1/fleet/<endpoint>` and `GET /health`; everything else (/v1/control/*,
/v1/runtime/*, /docs, /openapi.json, any encoded or dotted path) gets 403 from nginx itself. `flwr` and
`oncofed run` reach the SuperLink on the coordinator host over loopback.

SuperNode authentication travels in request headers (signed timestamps), which nginx passes through; the
SuperLink refuses `--enable-supernode-auth` without TLS, so the hop to 127.0.0.1 is TLS too, verified against the
federation's CA as `localhost` (nginx checks upstream names against DNS SANs only). Model weights travel in
Flower's array chunks (5 MiB by default), so the body limit is raised well above that.
"""

from dataclasses import dataclass
from pathlib import Path

from deploy.kits.contents import CoordinatorKit
from models.shared.atomic import atomic_write_bytes

CONFIG_NAME = "nginx.conf"
MAX_BODY = "64m"
"""nginx's client_max_body_size: above Flower's largest Fleet request (an array chunk, FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE,
5 MiB by default, plus its envelope); nginx's default of 1 MiB would refuse weight uploads with 413."""
FLEET_PATH = r"^/v1/fleet/[a-z-]+$"
"""The only request paths passed to the SuperLink besides /health (matched on the raw and the normalised URI)."""
UPSTREAM_NAME = "localhost"
LOCAL_CLIENTS = ("127.0.0.1", "::1")
"""Always let in, with an allow-list too: the coordinator's own health check and tools on this host."""


@dataclass(frozen=True)
class ProxyLimits:
    """What one client of the public port may hold and ask, so that unauthenticated clients cannot starve the sites.

    Idle connections (a TCP or TLS handshake never completed, or no request sent) count against no per-client limit
    in nginx's http module: they are bounded by `worker_connections` and closed after `header_timeout_s` (nginx 1.22
    times the TLS handshake with client_header_timeout too). A SuperNode uses a few keep-alive connections and,
    pulling a model, bursts of a few hundred small requests (one per array object and chunk): the per-client rates
    leave room for several sites behind one address (all sites share 127.0.0.1 in the tests).
    """

    worker_connections: int = 8192
    """Connections nginx holds at once (each proxied request uses two); nginx's default is 512."""
    open_files: int = 16384
    """worker_rlimit_nofile: file descriptors for those connections (the unit file raises LimitNOFILE to match)."""
    connections_per_client: int = 64
    """Connections with a request in progress, per client address (limit_conn)."""
    requests_per_second: int = 200
    """Sustained request rate per client address (limit_req)."""
    request_burst: int = 2000
    """Requests above that rate a client may send at once before it gets 429 (a model pull is a burst)."""
    header_timeout_s: int = 10
    """Handshake and request header must arrive within this (nginx's default: 60 s)."""
    body_timeout_s: int = 30
    """Longest pause between two reads of a request body (a weight chunk upload)."""
    send_timeout_s: int = 30
    """Longest pause between two writes of a response."""
    keepalive_timeout_s: int = 30
    """An idle keep-alive connection is closed after this."""
    upstream_timeout_s: int = 120
    """How long the SuperLink may take to answer one Fleet request (Fleet requests are short)."""


DEFAULT_LIMITS = ProxyLimits()


def _allow_list(kit: CoordinatorKit) -> str:
    """nginx access rules: the spec's networks and this host, everyone else 403 (nothing when no list is set)."""
    if not kit.allowed_networks:
        return "        # No allowed-networks in the federation spec: any client address may connect."
    lines = ["        # Only the federation spec's allowed-networks (and this host) reach the Fleet API."]
    lines += [f"        allow {network};" for network in (*kit.allowed_networks, *LOCAL_CLIENTS)]
    lines.append("        deny all;")
    return "\n".join(lines)


def render_config(kit: CoordinatorKit, limits: ProxyLimits = DEFAULT_LIMITS) -> str:
    """nginx.conf for this kit at its current location (absolute paths: the kit may have been moved)."""
    run = kit.proxy_folder / "run"
    listen = f"[{kit.bind_host}]:{kit.port}" if ":" in kit.bind_host else f"{kit.bind_host}:{kit.port}"
    return f"""\
# nginx in front of the SuperLink of federation "{kit.federation}". Written by `oncofed provision` and again by
# every `oncofed coordinator start` (paths follow the kit); do not edit. It runs as a child of
# `oncofed coordinator start`, with its own pid, temp and log files in this kit: not the system's nginx service.
#
# Sites reach only Flower's Fleet API and /health on {listen}. The Control API (run submission, node
# registration, `flwr ls`), the Runtime API and the API docs answer 403: they are served by the SuperLink on
# 127.0.0.1:{kit.superlink_port}, reachable from this host only.
daemon off;
worker_processes 1;
worker_rlimit_nofile {limits.open_files};
pid {run}/nginx.pid;
# info: connections closed for timing out (idle clients holding the port) are logged too.
error_log {kit.logs}/proxy-error.log info;

events {{
    worker_connections {limits.worker_connections};
}}

http {{
    log_format fleet '$remote_addr [$time_local] "$request" $status request_bytes=$request_length '
                     'response_bytes=$body_bytes_sent';
    access_log {kit.logs}/proxy-access.log fleet;
    client_body_temp_path {run}/client-body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    server_tokens off;

    # Per client address: connections with a request in progress, and a request rate with room for a model pull.
    limit_conn_zone $binary_remote_addr zone=per_client_connections:10m;
    limit_req_zone $binary_remote_addr zone=per_client_requests:10m rate={limits.requests_per_second}r/s;
    limit_conn_status 429;
    limit_req_status 429;
    # Short client timeouts: a client that connects and says nothing is closed after {limits.header_timeout_s} s.
    client_header_timeout {limits.header_timeout_s}s;
    client_body_timeout {limits.body_timeout_s}s;
    send_timeout {limits.send_timeout_s}s;
    keepalive_timeout {limits.keepalive_timeout_s}s;

    upstream superlink {{
        server 127.0.0.1:{kit.superlink_port};
        keepalive 8;
    }}

    server {{
        listen {listen} ssl;
        ssl_certificate {kit.server_certificate};
        ssl_certificate_key {kit.server_key};
        ssl_protocols TLSv1.2 TLSv1.3;

{_allow_list(kit)}
        limit_conn per_client_connections {limits.connections_per_client};
        limit_req zone=per_client_requests burst={limits.request_burst} nodelay;

        # Weights travel in chunks of up to 5 MiB: raise nginx's 1 MiB default; stream them, do not buffer.
        client_max_body_size {MAX_BODY};
        proxy_request_buffering off;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_read_timeout {limits.upstream_timeout_s}s;
        proxy_send_timeout {limits.upstream_timeout_s}s;

        # The hop to the SuperLink is TLS too (it refuses SuperNode authentication without), verified.
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate {kit.ca_certificate};
        proxy_ssl_name {UPSTREAM_NAME};
        proxy_ssl_server_name on;
        proxy_ssl_session_reuse on;

        location ~ {FLEET_PATH} {{
            if ($request_uri !~ "{FLEET_PATH}") {{
                return 403;
            }}
            limit_except POST {{
                deny all;
            }}
            proxy_pass https://superlink;
        }}

        location = /health {{
            if ($request_uri != "/health") {{
                return 403;
            }}
            limit_except GET {{
                deny all;
            }}
            proxy_pass https://superlink;
        }}

        location / {{
            return 403;
        }}
    }}
}}
"""


def write_proxy_config(kit: CoordinatorKit) -> Path:
    path = kit.proxy_folder / CONFIG_NAME
    atomic_write_bytes(path, render_config(kit).encode("utf-8"))
    return path
