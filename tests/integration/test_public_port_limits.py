"""The public port under an unauthenticated client holding connections open: with nginx's defaults (512 worker
connections, 60 s to send a header) 1,000 idle connections that never finish a request starve the port (the
control); with the coordinator kit's limits (deploy/kits/proxy_config.py) the port keeps answering and a 2-site run
through it completes, while the proxy's log shows the idle clients timed out.

The attacker connects from 127.0.0.2 (any 127/8 address is this host on Linux): per-client limits see it apart
from the sites on 127.0.0.1, as they would see a client on the internet apart from the hospitals.
"""

import os
import resource
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

import pytest
from loopback_federation import LoopbackFederation, wait_for_text

from deploy.coordinator.proxy import nginx_executable
from deploy.kits.contents import read_coordinator_kit
from deploy.kits.proxy_config import ProxyLimits, render_config
from deploy.processes import free_port, start_process
from server_app.run_record.run_folder import COMPLETED, SUMMARY_FILE, read_json

pytestmark = (
    pytest.mark.slow
)  # a 2-site deployment and a run under attack: minutes (the config: test_proxy_config)

IDLE_CONNECTIONS = 1000
ATTACKER_ADDRESS = "127.0.0.2"
NGINX_DEFAULTS = ProxyLimits(
    worker_connections=512,
    open_files=4096,
    connections_per_client=60000,
    requests_per_second=100000,
    request_burst=100000,
    header_timeout_s=60,
    body_timeout_s=60,
    send_timeout_s=60,
    keepalive_timeout_s=75,
    upstream_timeout_s=600,
)
"""The control: the proxy as nginx configures a server when nothing is set (and as the kit did before limits)."""


class IdleClients:
    """Holds up to `count` connections to the proxy that never finish their request (slowloris): each completes the
    TLS handshake, sends half a request header and then nothing; one the proxy closes is opened again. Opening stops
    at the first connection the proxy does not accept within `connect_timeout_s` (it is full)."""

    def __init__(self, port: int, ca: Path, count: int, connect_timeout_s: float = 3.0) -> None:
        self.port, self.count, self.connect_timeout_s = port, count, connect_timeout_s
        self.context = ssl.create_default_context(cafile=str(ca))
        self.sockets: list[ssl.SSLSocket] = []
        self.reopened = 0
        self.full = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def __enter__(self) -> Self:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
        while len(self.sockets) < self.count and not self.full:
            client = self._connect()
            if client is None:
                self.full = True
            else:
                self.sockets.append(client)
        self._thread.start()
        return self

    def _connect(self) -> ssl.SSLSocket | None:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.bind((ATTACKER_ADDRESS, 0))
        raw.settimeout(self.connect_timeout_s)
        try:
            raw.connect(("127.0.0.1", self.port))
            client = self.context.wrap_socket(raw, server_hostname="localhost")
            client.sendall(b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: localhost\r\n")
        except (OSError, TimeoutError):
            raw.close()
            return None
        client.setblocking(False)
        return client

    def _hold(self) -> None:
        while not self._stop.wait(1.0):
            for index, client in enumerate(self.sockets):
                try:
                    closed = client.recv(1) == b""
                except ssl.SSLWantReadError:
                    closed = False
                except OSError:
                    closed = True
                if closed:
                    client.close()
                    replacement = self._connect()
                    if replacement is not None:
                        self.sockets[index] = replacement
                        self.reopened += 1

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for client in self.sockets:
            client.close()


def health(port: int, ca: Path, timeout_s: float = 5.0) -> int | str:
    """The status of GET /health through the proxy on `port`, or why it failed."""
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(
            f"https://127.0.0.1:{port}/health", context=context, timeout=timeout_s
        ) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, TimeoutError) as error:
        return type(error).__name__


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    fed = LoopbackFederation.provision(tmp_path_factory.mktemp("public-port"), n_sites=2)
    try:
        fed.start_coordinator()
        for site in fed.sites:
            fed.start_site(site)
        yield fed
    finally:
        orphans = fed.close()
    assert orphans == [], f"processes outlived the command that started them: {orphans}"


def test_idle_connections_starve_a_proxy_with_nginx_defaults(federation, tmp_path):
    """Control: the same SuperLink behind a second nginx with the defaults stops answering under the attack."""
    kit = read_coordinator_kit(federation.coordinator_kit)
    control_port = free_port()
    control_kit = type(kit)(
        **{**kit.__dict__, "root": tmp_path, "port": control_port, "bind_host": "127.0.0.1"}
    )
    (tmp_path / "certs").symlink_to(kit.root / "certs")
    (tmp_path / "proxy" / "run").mkdir(parents=True)
    (tmp_path / "logs").mkdir()
    config = tmp_path / "proxy" / "nginx.conf"
    config.write_text(render_config(control_kit, NGINX_DEFAULTS))
    command = [
        nginx_executable(),
        "-p",
        str(tmp_path / "proxy" / "run"),
        "-c",
        str(config),
        "-e",
        str(tmp_path / "logs" / "e.log"),
    ]
    control = start_process("nginx-control", command, dict(os.environ), tmp_path / "logs" / "nginx.out")
    try:
        deadline = time.monotonic() + 30
        while health(control_port, kit.ca_certificate) != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert health(control_port, kit.ca_certificate) == 200
        with IdleClients(control_port, kit.ca_certificate, IDLE_CONNECTIONS) as attack:
            assert attack.full, "nginx with its defaults holds fewer than 1,000 connections"
            assert health(control_port, kit.ca_certificate) != 200
    finally:
        control.stop()


def test_the_kit_proxy_answers_and_a_run_completes_under_1000_idle_connections(federation):
    fed = federation
    kit = read_coordinator_kit(fed.coordinator_kit)
    with IdleClients(fed.port, kit.ca_certificate, IDLE_CONNECTIONS) as attack:
        assert not attack.full and len(attack.sockets) == IDLE_CONNECTIONS
        assert health(fed.port, kit.ca_certificate) == 200
        run = fed.run(
            "run-under-attack", "--rounds", "1", "--preset", "tiny", "--run-config", "local-epochs=1"
        )
        try:
            code = run.popen.wait(timeout=900)
        finally:
            run.stop()
        held = attack.reopened
    output = fed.output("run-under-attack").read_text(errors="replace")
    assert code == 0, output[-3000:]
    (run_dir,) = fed.run_dirs()
    assert read_json(run_dir / SUMMARY_FILE)["status"] == COMPLETED
    assert held >= IDLE_CONNECTIONS // 2, "the proxy closed the idle clients after its header timeout"
    wait_for_text(kit.logs / "proxy-error.log", "client timed out", 30)
    assert ATTACKER_ADDRESS in (kit.logs / "proxy-error.log").read_text(errors="replace")
