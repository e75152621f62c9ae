"""A site kit provisioned with `--wheelhouse` installs with the network cut off (`unshare -n`), the installed
`oncofed site check` passes there, `install.sh --keygen-only` makes the site's key pair from the kit's own
cryptography wheel, and a wheel with one byte changed is refused by pip with its hash error.

The wheels are downloaded once per machine into the default wheel cache (~/.cache/oncofed/wheels, about 535 MB);
installing them all takes minutes on 2 cores: slow tests (`make test-slow`). The fast tests of the same paths, on
tiny wheels, are tests/unit/test_wheelhouse.py and tests/integration/test_site_install.py."""

import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from federation_kits import make_site_keys, run_oncofed, write_spec
from offline_install import OFFLINE, clean_env, connects, run_offline

from data_prep.synth.federation import write_federation
from deploy.kits.wheelhouse import LOCK_FILE, WHEELS_DIR
from deploy.processes import free_port

pytestmark = pytest.mark.slow  # a full offline install of every wheel (torch included): minutes

SITE = "hospital-a"


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("offline-kit")
    keys = make_site_keys(root / "hospital-keys", [SITE])
    write_spec(root / "spec.toml", "offline", [SITE], free_port(), {SITE: keys[SITE].public})
    result = run_oncofed(
        "provision", str(root / "spec.toml"), "--out", str(root / "kits"), "--wheelhouse", timeout=900
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wheels, installs offline" in result.stdout and " MB; " in result.stdout  # size and count printed
    return root / "kits" / "sites" / SITE


def test_the_namespace_cuts_every_connection():
    """The control: a listener on this host is reached from the normal namespace, not from `unshare -n`."""
    assert connects(offline=False)
    assert not connects(offline=True)


def test_the_kit_installs_offline_and_site_check_passes(kit, tmp_path):
    prefix = tmp_path / "opt-oncofed"
    installed = run_offline(
        ["sh", str(kit / "install.sh"), "--prefix", str(prefix), "--no-user", "--no-systemd"]
    )
    assert installed.returncode == 0, installed.stderr + installed.stdout
    assert f"offline, from {kit / WHEELS_DIR}" in installed.stdout

    python = prefix / "venv" / "bin" / "python"
    probe = (
        "from importlib.metadata import version; print(version('torch'), version('flwr'), version('oncofed'))"
    )
    versions = run_offline([str(python), "-c", probe], timeout=120)
    assert versions.stdout.split() == [version("torch"), version("flwr"), version("oncofed")], versions.stderr

    data, work = tmp_path / "data", tmp_path / "work"
    write_federation(data, n_sites=1, seed=4, preset="tiny")
    check = run_offline(
        [
            str(prefix / "venv" / "bin" / "oncofed"),
            "site",
            "check",
            "--data",
            str(data / SITE),
            "--work",
            str(work),
        ],
        timeout=300,
    )
    assert check.returncode == 0, check.stderr + check.stdout
    assert "usable" in check.stdout and (work / "inventory.json").is_file()


def test_keygen_only_uses_the_kits_cryptography_wheel_offline(kit, tmp_path):
    """Nothing installed, no ssh-keygen on PATH: Python's standard library and the kit's wheel make the pair."""
    bare_path = tmp_path / "bin"
    bare_path.mkdir()
    for tool in ("sh", "mkdir", "chmod", "ls", "mv", "dirname"):
        (bare_path / tool).symlink_to(shutil.which(tool))
    (bare_path / "python3").symlink_to(Path(sys.executable).resolve())  # the interpreter, not a version shim
    env = {**clean_env(), "PATH": str(bare_path)}
    made = subprocess.run(
        [
            shutil.which(OFFLINE[0]),  # the PATH below holds only what keygen needs
            *OFFLINE[1:],
            "sh",
            str(kit / "install.sh"),
            "--keygen-only",
            "--prefix",
            str(tmp_path / "p"),
            "--no-user",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert "fingerprint SHA256:" in made.stdout  # printed by the kit's Python path only, not by ssh-keygen
    check = run_oncofed("site", "keygen", "--out", str(tmp_path / "control"))  # the same kind of pair
    assert check.returncode == 0
    assert (tmp_path / "p" / "keys" / "site.pub").read_text().split()[0] == (
        (tmp_path / "control" / "site.pub").read_text().split()[0]
    )


def test_a_wheel_with_one_byte_changed_is_refused_by_pip(kit, tmp_path):
    copy = tmp_path / "kit"
    (copy / WHEELS_DIR).mkdir(parents=True)
    for wheel in (kit / WHEELS_DIR).iterdir():
        os.link(wheel, copy / WHEELS_DIR / wheel.name)  # the kit's files, without copying 535 MB
    changed = next((kit / WHEELS_DIR).glob("six-*.whl"))
    (copy / WHEELS_DIR / changed.name).unlink()
    data = bytearray(changed.read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / WHEELS_DIR / changed.name).write_bytes(bytes(data))
    os.link(kit / LOCK_FILE, copy / LOCK_FILE)
    (copy / "packages").mkdir()
    for package in (kit / "packages").iterdir():
        os.link(package, copy / "packages" / package.name)

    venv = tmp_path / "venv"
    subprocess.run(["python3.11", "-m", "venv", str(venv)], env=clean_env(), check=True, timeout=120)
    pip = [str(venv / "bin" / "pip"), "install", "--no-index", "--find-links", WHEELS_DIR, "--require-hashes"]
    refused = run_offline([*pip, "-r", LOCK_FILE], cwd=copy, timeout=900)
    assert refused.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE" in refused.stderr, (
        refused.stderr
    )
    assert changed.name in refused.stderr
    listed = subprocess.run(
        [str(venv / "bin" / "pip"), "list"], env=clean_env(), capture_output=True, text=True, check=True
    )
    assert "torch" not in listed.stdout  # nothing was installed
