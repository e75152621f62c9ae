"""`oncofed provision`: kits from the sites' own public keys, with no site's private key anywhere at the
coordinator, the CA in its own folder (offline-able), a reproducible release FAB pre-approved by every site kit,
re-runs that add a site (or renew the server certificate) without touching any existing site kit, and clear spec
errors."""

import shutil
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from federation_kits import private_key_files
from flwr.cli.build import build_fab_from_disk
from flwr.supercore.primitives.asymmetric import uses_nist_ec_curve
from typer.testing import CliRunner

from deploy.flower_env import app_directory
from deploy.kits import certificates as certs
from deploy.kits.app_approval import read_allow_list
from deploy.kits.contents import KitError, read_coordinator_kit, read_site_kit
from deploy.kits.federation_spec import SpecError, read_spec
from deploy.kits.provision import provision
from deploy.kits.release_fab import build_fab, read_fab, sha256_hex
from deploy.kits.site_keys import generate_site_keys
from models.shared.atomic import atomic_write_bytes
from models.shared.exit_codes import ExitCode
from oncofed_cli import app

SITES = ["hospital-a", "hospital-b", "hospital-c"]


def spec_text(
    sites: list[str],
    addresses: str = '["fl.example.org", "10.0.0.5"]',
    federation: str = "oncofed-t",
    port: int = 8443,
    keys: Path | None = None,
) -> str:
    """A spec; with `keys`, one [sites.NAME] table per site naming keys/NAME/site.pub (relative to the spec)."""
    text = f'federation = "{federation}"\n\n[coordinator]\naddresses = {addresses}\nport = {port}\n\n'
    if keys is None:
        quoted = ", ".join(f'"{s}"' for s in sites)
        return f"sites = [{quoted}]\n" + text
    for site in sites:
        text += f'[sites.{site}]\npublic-key = "{keys.name}/{site}/site.pub"\n\n'
    return text


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def hospital_keys(root: Path, sites: list[str]) -> Path:
    """Each hospital makes its pair (`oncofed site keygen`); the coordinator gets only the .pub files."""
    for site in sites:
        if not (root / site / "site.pub").exists():
            generate_site_keys(root / site, comment=site)
    return root


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("provision")
    keys = hospital_keys(root / "keys", SITES)
    provision(read_spec(write(root / "spec.toml", spec_text(SITES, keys=keys))), root / "out")
    return root


def copy_of(provisioned: Path, tmp_path: Path) -> Path:
    """A copy of the whole provisioning (spec, hospitals' keys, output): returns the copy's output folder."""
    shutil.copytree(provisioned, tmp_path / "p")
    return tmp_path / "p" / "out"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_coordinator_kit(provisioned):
    out = provisioned / "out"
    kit = read_coordinator_kit(out / "coordinator")
    assert (
        kit.federation == "oncofed-t"
        and kit.port == 8443
        and kit.superlink_port == 8444
        and kit.sites == SITES
    )
    ca = certs.load_certificate(kit.ca_certificate)
    server = certs.load_certificate(kit.server_certificate)
    assert certs.is_signed_by(server, ca)
    assert set(certs.certificate_names(server)) == {"fl.example.org", "10.0.0.5", "127.0.0.1", "localhost"}
    assert 360 < certs.days_left(server) <= certs.SERVER_DAYS
    assert certs.days_left(ca) > certs.days_left(server)
    assert certs.load_private_key_pem(kit.server_key).public_key() == server.public_key()
    assert kit.server_key.stat().st_mode & 0o777 == 0o600
    connection = tomllib.loads((kit.flwr_home / "config.toml").read_text())["superlink"]
    assert connection["default"] == "oncofed"
    assert connection["oncofed"]["address"] == "127.0.0.1:8444"  # the SuperLink itself, on loopback
    assert Path(connection["oncofed"]["root-certificates"]) == kit.ca_certificate
    assert len(list((kit.root / "packages").glob("oncofed-*.whl"))) == 1
    assert "listen 0.0.0.0:8443 ssl;" in (kit.root / "proxy" / "nginx.conf").read_text()


def test_the_ca_key_lives_only_in_the_ca_folder(provisioned):
    out = provisioned / "out"
    ca_key = out / "ca" / "ca.key"
    assert ca_key.stat().st_mode & 0o777 == 0o600 and (out / "ca").stat().st_mode & 0o777 == 0o700
    key = certs.load_private_key_pem(ca_key)
    assert key.public_key() == certs.load_certificate(out / "coordinator" / "certs" / "ca.crt").public_key()
    for kit in (out / "coordinator", *(out / "sites").iterdir()):
        assert not any(path.name == "ca.key" for path in kit.rglob("*")), kit
        for file in kit.rglob("*"):
            assert not file.is_file() or file.read_bytes() != ca_key.read_bytes()


def test_no_private_key_of_a_site_anywhere_in_the_output(provisioned):
    """Scan for OpenSSH/PEM private-key headers: only the CA's and the SuperLink's keys are there."""
    out = provisioned / "out"
    found = private_key_files(out)
    assert {p.relative_to(out) for p in found} == {Path("ca/ca.key"), Path("coordinator/certs/server.key")}
    site_keys = [certs.load_site_public_key(out / "coordinator" / "site-keys" / f"{s}.pub") for s in SITES]
    for path in found:
        assert serialization.load_pem_private_key(path.read_bytes(), None).public_key() not in site_keys


def test_site_kits(provisioned):
    out = provisioned / "out"
    release = read_coordinator_kit(out / "coordinator").release_sha256
    for site in SITES:
        kit_dir = out / "sites" / site
        hospital_key = certs.load_site_private_key(provisioned / "keys" / site / "site.key")
        assert isinstance(hospital_key.curve, ec.SECP384R1) and uses_nist_ec_curve(hospital_key.public_key())
        registered = certs.load_site_public_key(out / "coordinator" / "site-keys" / f"{site}.pub")
        assert registered == hospital_key.public_key()
        manifest = tomllib.loads((kit_dir / "kit.toml").read_text())
        assert manifest["key-fingerprint"] == certs.key_fingerprint(hospital_key.public_key())
        assert manifest["test-key"] is False and not (kit_dir / "keys").exists()
        assert (kit_dir / "certs" / "ca.crt").read_bytes() == (
            out / "coordinator" / "certs" / "ca.crt"
        ).read_bytes()
        site_toml = tomllib.loads((kit_dir / "site.toml").read_text())
        assert site_toml["coordinator"] == "fl.example.org:8443"  # the proxy's public port
        assert site_toml["private-key"].startswith("CHANGE-ME")
        assert [app.sha256 for app in read_allow_list(kit_dir / "approved-apps.toml")] == [release]
        (fab,) = (kit_dir / "release").iterdir()
        assert sha256_hex(fab.read_bytes()) == release


def test_the_release_fab_is_reproducible(provisioned):
    """The same source gives the same FAB, byte for byte: a site can rebuild the reviewed source and compare."""
    kit = read_coordinator_kit(provisioned / "out" / "coordinator")
    _, info = read_fab(kit.release)
    assert info.sha256 == kit.release_sha256 and info.publisher == "oncofed"
    assert sha256_hex(build_fab(app_directory())) == kit.release_sha256
    assert sha256_hex(build_fab_from_disk(app_directory())) == kit.release_sha256  # what `flwr build` makes
    assert {file.path for file in info.files} >= {"site_app/app.py", "server_app/app.py"}
    assert not any(file.path.startswith(("deploy/", "tests/")) for file in info.files)


def test_unfilled_site_toml_names_the_placeholder(provisioned):
    with pytest.raises(KitError, match=r"site\.toml: `data-path` still holds the placeholder"):
        read_site_kit(provisioned / "out" / "sites" / "hospital-a")


def test_rerun_adds_a_site_and_changes_no_existing_kit(provisioned, tmp_path):
    out = copy_of(provisioned, tmp_path)
    before = {site: snapshot(out / "sites" / site) for site in SITES}
    certs_before = snapshot(out / "coordinator" / "certs")
    release_before = snapshot(out / "coordinator" / "release")
    keys = hospital_keys(out.parent / "keys", ["hospital-d"])
    spec = write(out.parent / "spec.toml", spec_text([*SITES, "hospital-d"], keys=keys))
    report = provision(read_spec(spec), out)
    assert report.created == ["hospital-d"] and report.kept == SITES
    assert report.ca == "kept" and report.server_certificate == "kept" and report.release == "kept"
    assert {site: snapshot(out / "sites" / site) for site in SITES} == before
    assert snapshot(out / "coordinator" / "certs") == certs_before
    assert snapshot(out / "coordinator" / "release") == release_before
    assert read_coordinator_kit(out / "coordinator").sites == [*SITES, "hospital-d"]
    assert (out / "coordinator" / "site-keys" / "hospital-d.pub").is_file()


def test_add_site_with_its_public_key_needs_no_ca_key(provisioned, tmp_path):
    """`--add-site NAME --public-key FILE` with the CA folder offline: adding a site needs no CA key."""
    out = copy_of(provisioned, tmp_path)
    shutil.move(out / "ca", tmp_path / "vault")
    pair = generate_site_keys(tmp_path / "new-hospital")
    report = provision(read_spec(out.parent / "spec.toml"), out, add_sites={"hospital-e": pair.public})
    assert report.created == ["hospital-e"]
    manifest = tomllib.loads((out / "sites" / "hospital-e" / "kit.toml").read_text())
    assert manifest["key-fingerprint"] == pair.fingerprint
    assert not (out / "ca").exists()


def test_renewing_the_server_certificate_needs_the_ca_key(provisioned, tmp_path):
    out = copy_of(provisioned, tmp_path)
    coordinator = out / "coordinator" / "certs"
    ca_key = certs.load_private_key_pem(out / "ca" / "ca.key")
    ca = certs.load_certificate(out / "ca" / "ca.crt")
    key, expiring = certs.make_server_certificate(
        ca_key, ca, certs.server_names(["fl.example.org", "10.0.0.5"]), days=10
    )
    atomic_write_bytes(coordinator / "server.crt", certs.certificate_pem(expiring))
    atomic_write_bytes(coordinator / "server.key", certs.private_key_pem(key), mode=certs.PRIVATE_KEY_MODE)
    sites_before = snapshot(out / "sites")
    spec = read_spec(out.parent / "spec.toml")

    shutil.move(out / "ca", tmp_path / "vault")  # offline
    with pytest.raises(SpecError, match=r"needs the CA's private key.*--ca"):
        provision(spec, out)
    report = provision(spec, out, ca_dir=tmp_path / "vault")  # brought back for this run
    assert report.server_certificate.startswith("renewed")
    assert certs.days_left(certs.load_certificate(coordinator / "server.crt")) > 300
    assert snapshot(out / "sites") == sites_before  # sites hold the CA only: nothing to change there


def test_rerun_with_a_new_address_reissues_the_server_certificate(provisioned, tmp_path):
    out = copy_of(provisioned, tmp_path)
    keys = out.parent / "keys"
    spec = read_spec(
        write(
            out.parent / "spec.toml",
            spec_text(SITES, addresses='["fl.example.org", "fl2.example.org"]', keys=keys),
        )
    )
    report = provision(spec, out)
    assert "names changed" in report.server_certificate
    server = certs.load_certificate(out / "coordinator" / "certs" / "server.crt")
    assert set(certs.certificate_names(server)) == {
        "fl.example.org",
        "fl2.example.org",
        "127.0.0.1",
        "localhost",
    }


def test_generate_site_keys_is_labelled_a_test_federation(tmp_path):
    report = provision(
        read_spec(write(tmp_path / "spec.toml", spec_text(["site-1"]))),
        tmp_path / "out",
        generate_site_keys=True,
    )
    assert report.generated_keys == ["site-1"]
    kit = tmp_path / "out" / "sites" / "site-1"
    assert tomllib.loads((kit / "kit.toml").read_text())["test-key"] is True
    assert tomllib.loads((kit / "site.toml").read_text())["private-key"] == "keys/site.key"
    assert (kit / "keys" / "site.key").stat().st_mode & 0o777 == 0o600
    assert "Test federation" in (kit / "README.md").read_text()


def test_a_site_without_a_public_key_is_refused(tmp_path):
    with pytest.raises(
        SpecError, match=r"site 'site-1' has no public key.*oncofed site keygen.*--generate-site-keys"
    ):
        provision(read_spec(write(tmp_path / "spec.toml", spec_text(["site-1"]))), tmp_path / "out")
    assert not (tmp_path / "out" / "sites").exists()


def test_a_private_key_sent_as_public_key_is_refused(tmp_path):
    keys = hospital_keys(tmp_path / "keys", ["site-1"])
    shutil.copy(keys / "site-1" / "site.key", keys / "site-1" / "site.pub")  # the wrong file was sent
    with pytest.raises(SpecError, match=r"holds a PRIVATE key: a site sends only its public key"):
        provision(
            read_spec(write(tmp_path / "spec.toml", spec_text(["site-1"], keys=keys))), tmp_path / "out"
        )


def test_two_sites_with_one_key_are_refused(tmp_path):
    keys = hospital_keys(tmp_path / "keys", ["site-1"])
    shutil.copytree(keys / "site-1", keys / "site-2")
    with pytest.raises(
        SpecError, match=r"site 'site-2': its public key .* is already the key of site 'site-1'"
    ):
        provision(
            read_spec(write(tmp_path / "spec.toml", spec_text(["site-1", "site-2"], keys=keys))),
            tmp_path / "out",
        )


def test_a_kept_sites_key_is_not_replaced(provisioned, tmp_path):
    out = copy_of(provisioned, tmp_path)
    shutil.rmtree(out.parent / "keys" / "hospital-b")
    hospital_keys(out.parent / "keys", ["hospital-b"])  # a new pair under the old name
    with pytest.raises(SpecError, match=r"'hospital-b' was provisioned for the key .* revoke it"):
        provision(read_spec(out.parent / "spec.toml"), out)


def test_a_coordinator_kit_holding_the_ca_key_is_refused(provisioned, tmp_path):
    """Kits provisioned before the CA had its own folder: provisioning asks to move the key out."""
    out = copy_of(provisioned, tmp_path)
    shutil.copy(out / "ca" / "ca.key", out / "coordinator" / "certs" / "ca.key")
    with pytest.raises(SpecError, match=r"still holds the CA's private key.*keep that folder offline"):
        provision(read_spec(out.parent / "spec.toml"), out)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (spec_text(["Hospital A"]), "site name 'Hospital A'"),
        (spec_text(["hospital-a", "hospital-a"]), "'hospital-a' is listed twice"),
        (spec_text(SITES, addresses="[]"), "`addresses` is []"),
        (spec_text(SITES, addresses='["https://fl.example.org:8000"]'), "neither a DNS name nor an IP"),
        (spec_text(SITES, port=70000), "`port` is 70000"),
        ('federation = "x"\nsites = ["a"]\n', "no [coordinator] table"),
        (
            'federation = "x"\n[coordinator]\naddresses = ["a"]\nport = 1\n[sites.a]\npublic-key = 3\n',
            "`public-key` is 3",
        ),
        (
            'sites = ["a"]\nfederation = "x"\n[coordinator]\naddresses = ["a"]\nport = 8\nsuperlink-port = 8\n',
            "equals `port`",
        ),
        ("federation = [", "is not valid TOML"),
        (
            'sites = ["a"]\nfederation = "x"\n[coordinator]\naddresses = ["a"]\nport = 8\nallowed-networks = "10/8"\n',
            "must be a list of networks",
        ),
        (
            (
                'sites = ["a"]\nfederation = "x"\n[coordinator]\naddresses = ["a"]\nport = 8\n'
                'allowed-networks = ["10.0.0.0/33"]\n'
            ),
            "entry '10.0.0.0/33' is not a network",
        ),
    ],
)
def test_spec_errors_name_the_file_and_the_key(tmp_path, text, expected):
    spec = write(tmp_path / "spec.toml", text)
    with pytest.raises(SpecError) as error:
        read_spec(spec)
    assert expected in str(error.value) and str(spec) in str(error.value)


def test_another_federation_or_port_in_the_output_is_refused(provisioned, tmp_path):
    out = provisioned / "out"
    with pytest.raises(SpecError, match="belongs to federation 'oncofed-t'"):
        provision(read_spec(write(tmp_path / "a.toml", spec_text(SITES, federation="other"))), out)
    with pytest.raises(SpecError, match="provisioned with port 8443"):
        provision(read_spec(write(tmp_path / "b.toml", spec_text(SITES, port=9000))), out)


def test_provision_command(tmp_path):
    runner = CliRunner()
    keys = hospital_keys(tmp_path / "keys", ["site-1", "site-2"])
    spec = write(tmp_path / "spec.toml", spec_text(["site-1"], keys=keys))
    result = runner.invoke(
        app, ["provision", str(spec), "--out", str(tmp_path / "out"), "--ca", str(tmp_path / "my-ca")]
    )
    assert result.exit_code == 0, result.output
    assert "new site kit" in result.output and "site-1" in result.output and "offline" in result.output
    assert (tmp_path / "my-ca" / "ca.key").is_file() and not (tmp_path / "out" / "ca").exists()

    result = runner.invoke(
        app,
        [
            "provision",
            str(spec),
            "--out",
            str(tmp_path / "out"),
            "--ca",
            str(tmp_path / "my-ca"),
            "--add-site",
            "site-2",
            "--public-key",
            str(keys / "site-2" / "site.pub"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "not running: the new sites are registered when it starts" in result.output
    assert (tmp_path / "out" / "sites" / "site-2" / "kit.toml").is_file()

    result = runner.invoke(
        app, ["provision", str(spec), "--out", str(tmp_path / "out"), "--add-site", "site-3"]
    )
    assert result.exit_code == ExitCode.BAD_INPUT and "one public key file per added site" in result.output

    result = runner.invoke(app, ["provision", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "missing.toml is missing" in result.output


def test_rerun_refuses_a_coordinator_key_that_is_not_the_kits(provisioned, tmp_path):
    out = copy_of(provisioned, tmp_path)
    _, stranger = certs.site_key_openssh(certs.new_private_key())
    (out / "coordinator" / "site-keys" / "hospital-b.pub").write_bytes(stranger)
    with pytest.raises(SpecError, match=r"hospital-b\.pub .* is not the key of the kit"):
        provision(read_spec(out.parent / "spec.toml"), out)


def test_the_sites_networks_reach_the_coordinator_kit_and_its_proxy(tmp_path):
    text = spec_text(["hospital-a"]).replace(
        "[coordinator]\n", '[coordinator]\nallowed-networks = ["10.20.0.9/16", "192.0.2.7"]\n', 1
    )
    spec = read_spec(write(tmp_path / "spec.toml", text))
    assert spec.allowed_networks == ("10.20.0.0/16", "192.0.2.7/32")
    provision(spec, tmp_path / "out", generate_site_keys=True)
    kit = read_coordinator_kit(tmp_path / "out" / "coordinator")
    assert kit.allowed_networks == ("10.20.0.0/16", "192.0.2.7/32")
    assert "allow 10.20.0.0/16;" in (kit.proxy_folder / "nginx.conf").read_text()
