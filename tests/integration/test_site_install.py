"""The site kit's install.sh, run for real on a tiny kit (the kit's own install.sh and systemd unit, two tiny
wheels standing in for the 138 real ones, and a hashed lock): options and failures are one `error:` line, a second
run keeps what the site set up, a changed wheel is refused, and `--keygen-only` makes the kind of key pair the
federation reads. The real kit, with every wheel, is installed offline in test_offline_kit.py (slow)."""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_wheels import write_wheel

from deploy.kits.certificates import key_fingerprint, load_site_private_key
from deploy.kits.contents import APPROVED_APPS_FILE, SITE_FILE
from deploy.kits.operator_files import PYTHON_VERSION, Release, site_files
from deploy.kits.release_fab import FabInfo
from deploy.kits.site_keys import read_public_key
from deploy.kits.wheelhouse import LOCK_FILE, WHEELS_DIR, Pin, copy_wheels, lock_text, locked_wheels

TINY_CLI = 'def app():\n    print("tiny oncofed")\n'
PYTHON = f"python{PYTHON_VERSION}"


def offline_env() -> dict[str, str]:
    """No pip configuration and no extra sources: the kit's wheels only (and no code from this checkout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    return {**env, "PIP_CONFIG_FILE": os.devnull}


@pytest.fixture
def kit(tmp_path) -> Path:
    """A site kit's install files around two tiny wheels: `alpha` and an `oncofed` whose console script runs."""
    kit = tmp_path / "kit"
    package = write_wheel(
        kit / "packages",
        "oncofed",
        "0.1.0",
        requires=("alpha==1.0",),
        modules={"oncofed_cli": TINY_CLI},
        scripts={"oncofed": "oncofed_cli:app"},
    )
    write_wheel(tmp_path / "cache", "alpha", "1.0")
    locked = locked_wheels([Pin("alpha", "1.0")], tmp_path / "cache")
    copy_wheels(locked, kit / WHEELS_DIR)
    (kit / LOCK_FILE).write_text(lock_text(locked, package, f"packages/{package.name}"))
    fab = FabInfo("ab" * 32, "oncofed", "oncofed", "0.1.0", (), frozenset())
    files = site_files(
        Release(package, "1.42.0"), "tiny", "hospital-a", "localhost:8443", ["localhost"], "SHA256:x", fab
    )
    for name in ("install.sh", "oncofed-site.service", SITE_FILE):
        (kit / name).write_text(files[name])
    (kit / "install.sh").chmod(0o755)
    (kit / APPROVED_APPS_FILE).write_text("# approvals\n")
    return kit


def install(kit: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(kit / "install.sh"), *args],
        env=env or offline_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def for_this_user(prefix: Path) -> list[str]:
    return ["--prefix", str(prefix), "--no-user", "--systemd-dir", str(prefix / "systemd")]


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--frobnicate"], "unknown option --frobnicate"),
        (["--prefix"], "--prefix needs a value"),
        (["--prefix", "relative/path", "--no-user"], "give an absolute path"),
        (["--no-user", "--prefix", "{tmp}/p", "--python", "/bin/false"], "is not Python"),
        (["--no-user", "--prefix", "{tmp}/p", "--python", "{tmp}/no-python"], "no-python not found"),
    ],
)
def test_a_bad_option_is_one_error_line_and_nothing_is_installed(kit, tmp_path, args, named):
    result = install(kit, *(arg.replace("{tmp}", str(tmp_path)) for arg in args))
    assert named in one_error_line(result)
    assert not (tmp_path / "p").exists()


def test_without_root_it_says_how_to_run_it(kit, tmp_path):
    """The default install creates a user: it needs root, and says so (run here as `nobody`)."""
    shared = Path(os.environ.get("TMPDIR", "/tmp")) / f"oncofed-install-{os.getpid()}"
    shutil.copytree(kit, shared)
    try:
        shared.chmod(0o755)
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", str(shared / "install.sh")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        shutil.rmtree(shared)
    assert "run as root" in one_error_line(result) and "--no-user --prefix DIR" in result.stderr


def test_a_missing_lock_is_named(kit, tmp_path):
    (kit / LOCK_FILE).unlink()
    assert f"{LOCK_FILE} is missing" in one_error_line(install(kit, *for_this_user(tmp_path / "p")))


def test_install_is_offline_and_a_second_run_keeps_what_the_site_set_up(kit, tmp_path):
    prefix = tmp_path / "opt-oncofed"
    first = install(kit, *for_this_user(prefix))
    assert first.returncode == 0, first.stderr + first.stdout
    assert f"offline, from {kit / WHEELS_DIR}" in first.stdout
    modes = {name: stat.S_IMODE((prefix / name).stat().st_mode) for name in ("keys", "work", "kit")}
    assert modes == {"keys": 0o700, "work": 0o700, "kit": 0o750}
    assert not (prefix / "kit" / WHEELS_DIR).exists()  # the wheels are installed, not copied again
    ran = subprocess.run(
        [prefix / "venv" / "bin" / "oncofed"], env=offline_env(), capture_output=True, text=True, check=True
    )
    assert ran.stdout == "tiny oncofed\n"
    unit = (prefix / "systemd" / "oncofed-site.service").read_text()
    assert f"ExecStart={prefix}/venv/bin/oncofed site start --kit {prefix}/kit" in unit
    assert "User=" not in unit and "/opt/oncofed" not in unit

    site_toml = prefix / "kit" / SITE_FILE
    site_toml.write_text(site_toml.read_text() + "# set up by the site\n")
    (prefix / "kit" / APPROVED_APPS_FILE).write_text("# approved here\n")
    second = install(kit, *for_this_user(prefix))
    assert second.returncode == 0, second.stderr
    assert site_toml.read_text().endswith("# set up by the site\n")
    assert (prefix / "kit" / APPROVED_APPS_FILE).read_text() == "# approved here\n"
    assert sorted(p.name for p in prefix.iterdir()) == [
        "install.log",
        "keys",
        "kit",
        "systemd",
        "venv",
        "work",
    ]


def test_a_changed_wheel_is_refused_in_one_error_line(kit, tmp_path):
    wheel = next((kit / WHEELS_DIR).glob("alpha-*.whl"))
    data = bytearray(wheel.read_bytes())
    data[-40] ^= 0x01
    wheel.write_bytes(bytes(data))
    line = one_error_line(install(kit, *for_this_user(tmp_path / "p")))
    assert "DO NOT MATCH THE HASHES" in line and "get it again from the coordinator" in line
    assert not (tmp_path / "p" / "venv" / "bin" / "oncofed").exists()


def test_keygen_only_makes_the_federation_kind_of_key_pair_once(kit, tmp_path):
    """Without the kit's cryptography wheel (a kit without wheels/ for it), `--keygen-only` uses ssh-keygen; the
    pair is what `oncofed site keygen` makes (OpenSSH P-384, site.key 0600); a second run keeps it."""
    prefix = tmp_path / "opt-oncofed"
    made = install(kit, "--keygen-only", "--prefix", str(prefix), "--no-user")
    assert made.returncode == 0 and "send site.pub to the coordinator" in made.stdout, made.stderr
    private, public = prefix / "keys" / "site.key", prefix / "keys" / "site.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE((prefix / "keys").stat().st_mode) == 0o700
    assert read_public_key(public)[1] == key_fingerprint(load_site_private_key(private).public_key())
    again = install(kit, "--keygen-only", "--prefix", str(prefix), "--no-user")
    assert again.returncode == 0 and "kept:" in again.stdout
    assert read_public_key(public)[1] == key_fingerprint(load_site_private_key(private).public_key())
    assert not (prefix / "venv").exists()  # nothing installed


def test_the_python_is_found_by_its_version():
    assert shutil.which(PYTHON), f"{PYTHON} is what a kit's install.sh looks for; tests run on {sys.version}"
