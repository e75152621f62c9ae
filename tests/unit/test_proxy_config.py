"""The coordinator's nginx configuration: what it lets through to the SuperLink and what it does not. nginx
itself (its `-t` check, and requests through it) is exercised in tests/integration/test_deployment.py."""

import dataclasses
import re
from pathlib import Path

from deploy.kits.contents import CoordinatorKit
from deploy.kits.proxy_config import DEFAULT_LIMITS, FLEET_PATH, render_config


def kit(tmp_path: Path, bind_host: str = "0.0.0.0") -> CoordinatorKit:
    return CoordinatorKit(
        root=tmp_path,
        federation="fed",
        port=8443,
        superlink_port=9443,
        bind_host=bind_host,
        addresses=["fl.example.org", "127.0.0.1", "localhost"],
        sites=["hospital-a"],
        flwr_version="1.42.0",
        release_fab="release/app.fab",
        release_sha256="a" * 64,
    )


def test_only_fleet_and_health_are_passed(tmp_path):
    config = render_config(kit(tmp_path))
    assert "listen 0.0.0.0:8443 ssl;" in config
    assert "server 127.0.0.1:9443;" in config  # the SuperLink, on loopback
    passes = re.findall(r"location ([^{]+)\{", config)
    assert [p.strip() for p in passes] == [f"~ {FLEET_PATH}", "= /health", "/"]
    catch_all = config.split("location / {", 1)[1].split("}", 1)[0]
    assert "return 403;" in catch_all and "proxy_pass" not in catch_all
    assert config.count("proxy_pass https://superlink;") == 2


def test_fleet_path_rule_matches_only_plain_fleet_endpoints():
    rule = re.compile(FLEET_PATH)
    for allowed in ("/v1/fleet/pull-messages", "/v1/fleet/push-object", "/v1/fleet/send-node-heartbeat"):
        assert rule.match(allowed)
    for refused in (
        "/v1/control/start-run",
        "/v1/runtime/acquire-task",
        "/v1/fleet/../control/list-runs",
        "/v1/fleet/%2e%2e/control/list-runs",
        "/v1/fleet/pull-messages?x=1",
        "/v1/fleet/",
        "/docs",
    ):
        assert not rule.match(refused), refused


def test_upstream_is_tls_verified_and_bodies_fit_weights(tmp_path):
    config = render_config(kit(tmp_path))
    assert (
        "proxy_ssl_verify on;" in config
        and f"proxy_ssl_trusted_certificate {tmp_path}/certs/ca.crt;" in config
    )
    assert "proxy_ssl_name localhost;" in config  # a DNS SAN of the SuperLink certificate
    size = re.search(r"client_max_body_size (\d+)m;", config)
    assert size and int(size.group(1)) * 2**20 > 2 * 5 * 2**20  # above Flower's 5 MiB array chunks
    assert "proxy_request_buffering off;" in config


def test_every_file_nginx_writes_is_in_the_kit(tmp_path):
    config = render_config(kit(tmp_path))
    for directive in ("pid", "error_log", "access_log", "client_body_temp_path", "proxy_temp_path"):
        (path,) = re.findall(rf"^\s*{directive} (\S+)", config, flags=re.MULTILINE)
        assert Path(path.rstrip(";")).is_relative_to(tmp_path), directive
    assert "daemon off;" in config


def test_ipv6_bind_host(tmp_path):
    assert "listen [::1]:8443 ssl;" in render_config(kit(tmp_path, "::1"))


def _server_access_rules(config: str) -> list[tuple[str, str]]:
    """The server block's own allow/deny rules (not those inside a location's limit_except)."""
    server = config.split("server {", 1)[1]
    return re.findall(r"^ {8}(allow|deny) ([^;]+);", server, flags=re.MULTILINE)


def test_idle_and_greedy_clients_are_bounded(tmp_path):
    config = render_config(kit(tmp_path))
    limits = DEFAULT_LIMITS
    assert f"worker_connections {limits.worker_connections};" in config and limits.worker_connections >= 4096
    assert (
        f"worker_rlimit_nofile {limits.open_files};" in config
        and limits.open_files >= 2 * limits.worker_connections
    )
    assert f"client_header_timeout {limits.header_timeout_s}s;" in config and limits.header_timeout_s <= 15
    for directive in ("client_body_timeout", "send_timeout", "keepalive_timeout", "proxy_read_timeout"):
        assert re.search(rf"{directive} \d+s;", config), directive
    assert "600s" not in config
    assert f"limit_conn per_client_connections {limits.connections_per_client};" in config
    assert f"zone=per_client_requests:10m rate={limits.requests_per_second}r/s" in config
    assert "limit_req zone=per_client_requests" in config


def test_without_an_allow_list_any_address_may_connect(tmp_path):
    assert _server_access_rules(render_config(kit(tmp_path))) == []


def test_an_allow_list_lets_in_only_the_sites_networks_and_this_host(tmp_path):
    networked = dataclasses.replace(kit(tmp_path), allowed_networks=("10.20.0.0/16", "192.0.2.7/32"))
    assert _server_access_rules(render_config(networked)) == [
        ("allow", "10.20.0.0/16"),
        ("allow", "192.0.2.7/32"),
        ("allow", "127.0.0.1"),
        ("allow", "::1"),
        ("deny", "all"),
    ]
