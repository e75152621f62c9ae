"""A site's own key pair (`oncofed site keygen`), what the coordinator accepts as a site's public key, and how
`site check` speaks about the key named in site.toml (the kit's key, a missing or unreadable file)."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from data_prep.ingest_settings import IngestSettings
from deploy.kits import certificates as certs
from deploy.kits.contents import SiteKit, SiteKitSettings
from deploy.kits.site_keys import KeygenError, generate_site_keys, read_public_key
from deploy.site.preflight import check_site_key
from models.shared.exit_codes import ExitCode
from oncofed_cli import app


def site_kit(root: Path, key: Path, fingerprint: str) -> SiteKit:
    settings = SiteKitSettings(
        site_name="hospital-a",
        coordinator="localhost:8443",
        data_path=root / "data",
        work_path=root / "work",
        min_report_cases=5,
        runtime_port=9094,
        private_key=key,
        settings_file=root / "site.toml",
        ingest=IngestSettings(),
        policy={},
        limits={},
    )
    return SiteKit(root, "fed", "hospital-a", "1.42.0", fingerprint, settings)


def test_keygen_writes_a_private_key_only_this_user_reads(tmp_path):
    pair = generate_site_keys(tmp_path / "keys", comment="hospital-a")
    assert (
        pair.private.stat().st_mode & 0o777 == 0o600 and (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    )
    key = certs.load_site_private_key(pair.private)  # what Flower's SuperNode authentication reads
    assert isinstance(key.curve, ec.SECP384R1)
    public, fingerprint = read_public_key(pair.public)
    assert fingerprint == pair.fingerprint == certs.key_fingerprint(key.public_key())
    assert pair.public.read_text().endswith(" hospital-a\n") and b"PRIVATE" not in public
    with pytest.raises(KeygenError, match="exists already"):
        generate_site_keys(tmp_path / "keys")


def test_keygen_command(tmp_path):
    result = CliRunner().invoke(
        app, ["site", "keygen", "--out", str(tmp_path / "k"), "--comment", "hospital-a"]
    )
    assert result.exit_code == 0 and "send this file to the coordinator" in result.output
    again = CliRunner().invoke(app, ["site", "keygen", "--out", str(tmp_path / "k")])
    assert again.exit_code == ExitCode.BAD_INPUT and "exists already" in again.output


def test_ssh_keygen_keys_are_accepted_too(tmp_path):
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", str(tmp_path / "site.key")],
        check=True,
    )
    _, fingerprint = read_public_key(tmp_path / "site.key.pub")
    assert fingerprint == certs.key_fingerprint(
        certs.load_site_private_key(tmp_path / "site.key").public_key()
    )


def test_wrong_public_keys_are_named(tmp_path):
    pair = generate_site_keys(tmp_path / "keys")
    with pytest.raises(certs.KeyFileError, match="holds a PRIVATE key"):
        read_public_key(pair.private)
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "p256.pub").write_bytes(
        p256.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    with pytest.raises(certs.KeyFileError, match="secp256r1; the federation uses P-384"):
        read_public_key(tmp_path / "p256.pub")
    with pytest.raises(certs.KeyFileError, match="does not exist"):
        read_public_key(tmp_path / "none.pub")


def test_site_check_calls_it_the_kits_key(tmp_path):
    pair = generate_site_keys(tmp_path / "keys")
    result = check_site_key(site_kit(tmp_path, pair.private, pair.fingerprint))
    assert result.status == "ok" and "the kit's key" in result.message and "registered" not in result.message

    other = generate_site_keys(tmp_path / "other")
    result = check_site_key(site_kit(tmp_path, other.private, pair.fingerprint))
    assert result.problem == "key-mismatch" and "not the kit's key" in result.message

    result = check_site_key(site_kit(tmp_path, tmp_path / "nowhere" / "site.key", pair.fingerprint))
    assert result.problem == "key-missing" and "oncofed site keygen" in result.message

    pair.private.chmod(0o644)
    result = check_site_key(site_kit(tmp_path, pair.private, pair.fingerprint))
    assert result.status == "error" and "chmod 600" in result.message


def test_an_unreadable_key_is_a_clear_message_not_a_traceback():
    """As a user who may not read the key (containers run as a fixed uid): `site check` says whose the file must be."""
    folder = Path(tempfile.mkdtemp(prefix="oncofed-key-"))
    try:
        folder.chmod(0o755)
        pair = generate_site_keys(folder / "keys")
        (folder / "keys").chmod(0o755)
        code = (
            "from pathlib import Path; from deploy.kits.contents import SiteKit, SiteKitSettings; "
            "from deploy.site.preflight import check_site_key; from data_prep.ingest_settings import IngestSettings; "
            "s = SiteKitSettings('a', 'h:1', Path('/'), Path('/tmp'), 5, 9094, "
            f"Path({str(pair.private)!r}), Path('/site.toml'), IngestSettings(), {{}}, {{}}); "
            f"r = check_site_key(SiteKit(Path('/'), 'f', 'a', '1', {pair.fingerprint!r}, s)); print(r.problem); print(r.message)"
        )
        if os.getuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv: cannot be another user")
            command = [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-c",
                code,
            ]
        else:
            pair.private.chmod(0o000)
            command = [sys.executable, "-c", code]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parents[2],
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        problem, message = result.stdout.splitlines()[:2]
        assert problem == "key-unreadable"
        assert "cannot be read by this user (uid" in message and "chmod 600" in message and "chown" in message
    finally:
        shutil.rmtree(folder)
