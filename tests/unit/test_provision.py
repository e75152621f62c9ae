"""`oncofed provision`: real keys and certificates in the formats Flower reads, private keys private, re-runs that
add a site (or renew the server certificate) without touching any existing site kit, and clear spec errors."""

import shutil
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.supercore.primitives.asymmetric import uses_nist_ec_curve
from typer.testing import CliRunner

from deploy import certificates as certs
from deploy.kit import KitError, read_coordinator_kit, read_site_kit
from deploy.provision import SpecError, provision, read_spec
from models.atomic import atomic_write_bytes
from models.exit_codes import ExitCode
from oncofed_cli import app

SITES = ["hospital-a", "hospital-b", "hospital-c"]


def spec_text(
    sites: list[str],
    addresses: str = '["fl.example.org", "10.0.0.5"]',
    federation: str = "oncofed-t",
    port: int = 8443,
) -> str:
    quoted = ", ".join(f'"{s}"' for s in sites)
    return (
        f'federation = "{federation}"\nsites = [{quoted}]\n\n'
        f"[coordinator]\naddresses = {addresses}\nport = {port}\n"
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("provision")
    provision(read_spec(write(root / "spec.toml", spec_text(SITES))), root / "out")
    return root / "out"


def copy_of(provisioned: Path, tmp_path: Path) -> Path:
    shutil.copytree(provisioned, tmp_path / "out")
    return tmp_path / "out"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_coordinator_kit(provisioned):
    kit = read_coordinator_kit(provisioned / "coordinator")
    assert kit.federation == "oncofed-t" and kit.port == 8443 and kit.sites == SITES
    ca = certs.load_certificate(kit.ca_certificate)
    server = certs.load_certificate(kit.server_certificate)
    assert certs.is_signed_by(server, ca)
    assert set(certs.certificate_names(server)) == {"fl.example.org", "10.0.0.5", "127.0.0.1"}
    assert 360 < certs.days_left(server) <= certs.SERVER_DAYS
    assert certs.days_left(ca) > certs.days_left(server)
    assert certs.load_private_key_pem(kit.server_key).public_key() == server.public_key()
    for private in (kit.ca_key, kit.server_key):
        assert private.stat().st_mode & 0o777 == 0o600
    connection = tomllib.loads((kit.flwr_home / "config.toml").read_text())["superlink"]
    assert connection["default"] == "oncofed"
    assert connection["oncofed"]["address"] == "127.0.0.1:8443"
    assert Path(connection["oncofed"]["root-certificates"]) == kit.ca_certificate
    assert len(list((kit.root / "packages").glob("oncofed-*.whl"))) == 1


def test_site_kits(provisioned):
    ca_key_bytes = (provisioned / "coordinator" / "certs" / "ca.key").read_bytes()
    for site in SITES:
        kit_dir = provisioned / "sites" / site
        assert (kit_dir / "keys" / "site.key").stat().st_mode & 0o777 == 0o600
        key = certs.load_site_private_key(kit_dir / "keys" / "site.key")  # OpenSSH format, as Flower loads it
        assert isinstance(key.curve, ec.SECP384R1) and uses_nist_ec_curve(key.public_key())
        registered = certs.load_site_public_key(provisioned / "coordinator" / "site-keys" / f"{site}.pub")
        assert registered == key.public_key()
        manifest = tomllib.loads((kit_dir / "kit.toml").read_text())
        assert manifest["key-fingerprint"] == certs.key_fingerprint(key.public_key())
        assert (kit_dir / "certs" / "ca.crt").read_bytes() == (
            provisioned / "coordinator" / "certs" / "ca.crt"
        ).read_bytes()
        for file in kit_dir.rglob("*"):  # the CA's private key never leaves the coordinator kit
            assert not file.is_file() or file.read_bytes() != ca_key_bytes
        assert tomllib.loads((kit_dir / "site.toml").read_text())["coordinator"] == "fl.example.org:8443"


def test_unfilled_site_toml_names_the_placeholder(provisioned):
    with pytest.raises(KitError, match=r"site\.toml: `data-path` still holds the placeholder"):
        read_site_kit(provisioned / "sites" / "hospital-a")


def test_rerun_adds_a_site_and_changes_no_existing_kit(provisioned, tmp_path):
    out = copy_of(provisioned, tmp_path)
    before = {site: snapshot(out / "sites" / site) for site in SITES}
    certs_before = snapshot(out / "coordinator" / "certs")
    report = provision(read_spec(write(tmp_path / "spec.toml", spec_text([*SITES, "hospital-d"]))), out)
    assert report.created == ["hospital-d"] and report.kept == SITES
    assert report.ca == "kept" and report.server_certificate == "kept"
    assert {site: snapshot(out / "sites" / site) for site in SITES} == before
    assert snapshot(out / "coordinator" / "certs") == certs_before
    assert read_coordinator_kit(out / "coordinator").sites == [*SITES, "hospital-d"]
    assert (out / "coordinator" / "site-keys" / "hospital-d.pub").is_file()


def test_rerun_renews_an_expiring_server_certificate(provisioned, tmp_path):
    out = copy_of(provisioned, tmp_path)
    coordinator = out / "coordinator" / "certs"
    ca_key = certs.load_private_key_pem(coordinator / "ca.key")
    ca = certs.load_certificate(coordinator / "ca.crt")
    key, expiring = certs.make_server_certificate(
        ca_key, ca, ["fl.example.org", "10.0.0.5", "127.0.0.1"], days=10
    )
    atomic_write_bytes(coordinator / "server.crt", certs.certificate_pem(expiring))
    atomic_write_bytes(coordinator / "server.key", certs.private_key_pem(key), mode=certs.PRIVATE_KEY_MODE)
    sites_before = snapshot(out / "sites")

    report = provision(read_spec(write(tmp_path / "spec.toml", spec_text(SITES))), out)
    assert report.server_certificate.startswith("renewed")
    assert certs.days_left(certs.load_certificate(coordinator / "server.crt")) > 300
    assert snapshot(out / "sites") == sites_before  # sites hold the CA only: nothing to change there


def test_rerun_with_a_new_address_reissues_the_server_certificate(provisioned, tmp_path):
    out = copy_of(provisioned, tmp_path)
    spec = read_spec(
        write(tmp_path / "spec.toml", spec_text(SITES, addresses='["fl.example.org", "fl2.example.org"]'))
    )
    report = provision(spec, out)
    assert "names changed" in report.server_certificate
    server = certs.load_certificate(out / "coordinator" / "certs" / "server.crt")
    assert set(certs.certificate_names(server)) == {"fl.example.org", "fl2.example.org", "127.0.0.1"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (spec_text(["Hospital A"]), "site name 'Hospital A'"),
        (spec_text(["hospital-a", "hospital-a"]), "'hospital-a' is listed twice"),
        (spec_text(SITES, addresses="[]"), "`addresses` is []"),
        (spec_text(SITES, addresses='["https://fl.example.org:8000"]'), "neither a DNS name nor an IP"),
        (spec_text(SITES, port=70000), "`port` is 70000"),
        ('federation = "x"\nsites = ["a"]\n', "no [coordinator] table"),
        ("federation = [", "is not valid TOML"),
    ],
)
def test_spec_errors_name_the_file_and_the_key(tmp_path, text, expected):
    spec = write(tmp_path / "spec.toml", text)
    with pytest.raises(SpecError) as error:
        read_spec(spec)
    assert expected in str(error.value) and str(spec) in str(error.value)


def test_another_federation_or_port_in_the_output_is_refused(provisioned, tmp_path):
    with pytest.raises(SpecError, match="belongs to federation 'oncofed-t'"):
        provision(read_spec(write(tmp_path / "a.toml", spec_text(SITES, federation="other"))), provisioned)
    with pytest.raises(SpecError, match="provisioned with port 8443"):
        provision(read_spec(write(tmp_path / "b.toml", spec_text(SITES, port=9000))), provisioned)


def test_provision_command(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "provision",
            str(write(tmp_path / "spec.toml", spec_text(["site-1"]))),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "new site kit" in result.output and "site-1" in result.output
    assert (tmp_path / "out" / "sites" / "site-1" / "kit.toml").is_file()

    result = runner.invoke(app, ["provision", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "missing.toml is missing" in result.output


def test_rerun_refuses_a_coordinator_key_that_is_not_the_kits(provisioned, tmp_path):
    out = copy_of(provisioned, tmp_path)
    _, stranger = certs.site_key_openssh(certs.new_private_key())
    (out / "coordinator" / "site-keys" / "hospital-b.pub").write_bytes(stranger)
    with pytest.raises(SpecError, match=r"hospital-b\.pub .* is not the key of the kit"):
        provision(read_spec(write(tmp_path / "spec.toml", spec_text(SITES))), out)
