"""Site pre-flight (`oncofed site check --kit`): each failure has its own code and a message that says what to do.

The coordinator side is a real TLS server on loopback presenting the certificate under test (from the kit's CA,
another CA, for another name, expired), a port nobody listens on, and one that never answers the handshake.
"""

import datetime as dt
import socket
import ssl
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploy.kits import certificates as certs
from deploy.kits.federation_spec import read_spec
from deploy.kits.provision import provision
from deploy.processes import free_port
from deploy.site.preflight import check_coordinator, check_kit
from models.shared.atomic import atomic_write_bytes
from models.shared.exit_codes import ExitCode
from oncofed_cli import app


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # the client refusing our certificate is the point of most tests


@contextmanager
def tls_server(tmp_path: Path, key, certificate) -> Iterator[int]:
    """An HTTPS server on 127.0.0.1 presenting `certificate`; yields its port."""
    atomic_write_bytes(tmp_path / "srv.crt", certs.certificate_pem(certificate))
    atomic_write_bytes(tmp_path / "srv.key", certs.private_key_pem(key), mode=certs.PRIVATE_KEY_MODE)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "srv.crt", tmp_path / "srv.key")
    server = _QuietServer(("127.0.0.1", 0), _Health)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("preflight")
    (root / "spec.toml").write_text(
        'federation = "pf"\nsites = ["hospital-a"]\n\n[coordinator]\naddresses = ["localhost"]\nport = 8000\n'
    )
    provision(
        read_spec(root / "spec.toml"), root / "out", generate_site_keys=True
    )  # the kit holds a test key
    return root / "out"


@pytest.fixture
def ca(federation):
    ca_dir = federation / "ca"
    return certs.load_private_key_pem(ca_dir / "ca.key"), certs.load_certificate(ca_dir / "ca.crt")


@pytest.fixture
def kit(federation, tmp_path) -> Path:
    """A filled-in copy of the site kit, pointing at `localhost:<port>` (set per test)."""
    import shutil

    kit_dir = tmp_path / "kit"
    shutil.copytree(federation / "sites" / "hospital-a", kit_dir)
    (tmp_path / "data").mkdir()
    set_site_toml(kit_dir, **{"data-path": str(tmp_path / "data"), "work-path": str(tmp_path / "work")})
    return kit_dir


def set_site_toml(kit_dir: Path, **values: str | int) -> None:
    path = kit_dir / "site.toml"
    lines = []
    for line in path.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if key in values:
            value = values[key]
            line = f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}"
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")


def by_check(results) -> dict:
    return {result.check: result for result in results}


def test_all_checks_pass_against_the_coordinator_certificate(kit, federation, tmp_path):
    cert_dir = federation / "coordinator" / "certs"
    key = certs.load_private_key_pem(cert_dir / "server.key")
    with tls_server(tmp_path, key, certs.load_certificate(cert_dir / "server.crt")) as port:
        set_site_toml(kit, coordinator=f"localhost:{port}")
        results = check_kit(kit)
    assert [r for r in results if r.status != "ok"] == []
    assert {
        "kit files",
        "site key",
        "approved apps",
        "CA certificate",
        "flwr version",
        "disclosure thresholds",
        "data folder",
        "work folder",
        "coordinator",
    } == set(by_check(results))


def test_wrong_ca(kit, tmp_path):
    other_key, other_ca = certs.make_ca("other")
    with tls_server(tmp_path, *certs.make_server_certificate(other_key, other_ca, ["localhost"])) as port:
        result = check_coordinator("localhost", port, kit / "certs" / "ca.crt", timeout_s=5)
    assert result.problem == "wrong-ca"
    assert "not signed by this kit's CA" in result.message and str(kit / "certs" / "ca.crt") in result.message


def test_name_not_in_certificate(kit, ca, tmp_path):
    with tls_server(tmp_path, *certs.make_server_certificate(*ca, ["fl.other.org", "10.9.9.9"])) as port:
        result = check_coordinator("localhost", port, kit / "certs" / "ca.crt", timeout_s=5)
    assert result.problem == "name-mismatch"
    assert "not valid for 'localhost'" in result.message and "fl.other.org, 10.9.9.9" in result.message


def test_expired_certificate(kit, ca, tmp_path):
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    with tls_server(
        tmp_path, *certs.make_server_certificate(*ca, ["localhost"], days=30, not_before=long_ago)
    ) as port:
        result = check_coordinator("localhost", port, kit / "certs" / "ca.crt", timeout_s=5)
    assert result.problem == "expired-certificate"
    assert "expired on" in result.message and "renew" in result.message


def test_certificate_expiring_soon_is_a_warning(kit, ca, tmp_path):
    with tls_server(tmp_path, *certs.make_server_certificate(*ca, ["localhost"], days=10)) as port:
        result = check_coordinator("localhost", port, kit / "certs" / "ca.crt", timeout_s=5)
    assert (result.status, result.problem) == ("warning", "expiring-certificate")


def test_connection_refused(kit):
    result = check_coordinator("127.0.0.1", free_port(), kit / "certs" / "ca.crt", timeout_s=5)
    assert result.problem == "connection-refused" and "nothing listens there" in result.message


def test_timeout(kit):
    with socket.socket() as silent:  # accepts TCP (backlog) but never answers the TLS handshake
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        result = check_coordinator(
            "127.0.0.1", silent.getsockname()[1], kit / "certs" / "ca.crt", timeout_s=1
        )
    assert result.problem == "timeout" and "within 1 s" in result.message


def test_key_that_is_not_the_kits(kit):
    private, _ = certs.site_key_openssh(certs.new_private_key())
    atomic_write_bytes(kit / "keys" / "site.key", private, mode=certs.PRIVATE_KEY_MODE)
    result = by_check(check_kit(kit, timeout_s=1))["site key"]
    expected = tomllib.loads((kit / "kit.toml").read_text())["key-fingerprint"]
    assert (
        result.problem == "key-mismatch"
        and expected in result.message
        and "not the kit's key" in result.message
    )


def test_missing_or_unparsable_key_is_named(kit, tmp_path):
    set_site_toml(kit, **{"private-key": str(tmp_path / "nowhere.key")})
    result = by_check(check_kit(kit, timeout_s=1))["site key"]
    assert result.problem == "key-missing" and "site.toml private-key" in result.message
    (tmp_path / "garbage.key").write_text("not a key")
    set_site_toml(kit, **{"private-key": str(tmp_path / "garbage.key")})
    result = by_check(check_kit(kit, timeout_s=1))["site key"]
    assert result.problem == "key-invalid" and "not an unencrypted OpenSSH private key" in result.message


def test_a_private_key_readable_by_others_is_an_error(kit):
    (kit / "keys" / "site.key").chmod(0o644)
    result = by_check(check_kit(kit, timeout_s=1))["site key"]
    assert (result.status, result.problem) == ("error", "key-permissions") and "chmod 600" in result.message


def test_site_start_refuses_a_private_key_readable_by_others(kit):
    """The careless admin: the key was copied with a umask of 022. Nothing starts; the fix is named."""
    key = kit / "keys" / "site.key"
    key.chmod(0o644)
    try:
        result = CliRunner().invoke(app, ["site", "start", "--kit", str(kit)], env={"COLUMNS": "200"})
    finally:
        key.chmod(0o600)
    assert result.exit_code == ExitCode.BAD_INPUT, result.output
    assert f"chmod 600 {key}" in result.output
    assert "connecting to" not in result.output


def test_approved_apps(kit):
    release = tomllib.loads((kit / "kit.toml").read_text())["release-sha256"]
    result = by_check(check_kit(kit, timeout_s=1))["approved apps"]
    assert result.status == "ok" and release[:12] in result.message
    (kit / "approved-apps.toml").write_text("")
    result = by_check(check_kit(kit, timeout_s=1))["approved apps"]
    assert result.problem == "no-app-approved" and "refuses every run" in result.message
    (kit / "approved-apps.toml").write_text("[[app]\n")
    assert by_check(check_kit(kit, timeout_s=1))["approved apps"].problem == "allow-list-invalid"


def test_flwr_version_other_than_the_kits(kit):
    manifest = kit / "kit.toml"
    manifest.write_text(manifest.read_text().replace('flwr-version = "', 'flwr-version = "0.9'))
    result = by_check(check_kit(kit, timeout_s=1))["flwr version"]
    assert result.problem == "flwr-version" and "pip install flwr==0.9" in result.message


def test_ca_expiring_soon_is_a_warning(kit):
    _, short_ca = certs.make_ca("pf", days=12)
    atomic_write_bytes(kit / "certs" / "ca.crt", certs.certificate_pem(short_ca))
    result = by_check(check_kit(kit, timeout_s=1))["CA certificate"]
    assert (result.status, result.problem) == ("warning", "expiring-certificate")


def test_folders(kit, tmp_path):
    set_site_toml(kit, **{"data-path": str(tmp_path / "nowhere"), "work-path": str(tmp_path / "data" / "w")})
    results = by_check(check_kit(kit, timeout_s=1))
    assert results["data folder"].problem == "data-missing" and "nowhere" in results["data folder"].message
    set_site_toml(kit, **{"data-path": str(tmp_path / "data")})
    assert by_check(check_kit(kit, timeout_s=1))["work folder"].problem == "work-in-data"


def test_placeholder_left_in_site_toml(federation):
    results = check_kit(federation / "sites" / "hospital-a")
    assert len(results) == 1 and results[0].problem == "kit-invalid"
    assert "`data-path` still holds the placeholder" in results[0].message


def test_site_check_command_is_bad_input_and_shows_each_problem(kit):
    set_site_toml(kit, coordinator=f"127.0.0.1:{free_port()}")
    result = CliRunner().invoke(app, ["site", "check", "--kit", str(kit)], env={"COLUMNS": "200"})
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "connection refused" in result.output and "flwr version" in result.output
