"""`make test` on a bare machine: the Debian packages the tests use are installed first, or the run stops at once
with one line naming them (tests/support/system_packages.sh, called by the Makefile before any test)."""

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "support" / "system_packages.sh"
PACKAGES = ("chromium", "tesseract-ocr", "nginx-light", "dicom3tools")


def _bin(tmp_path: Path, **programs: str) -> Path:
    """A PATH folder holding only the given programs (name → shell body); none of the tested commands."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, body in programs.items():
        program = folder / name
        program.write_text(f"#!/bin/bash\n{body}\n")
        program.chmod(0o755)
    return folder


def _run(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["/bin/bash", str(SCRIPT)],
        env={"PATH": str(path), "HOME": os.environ.get("HOME", "/root")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_without_apt_it_stops_at_once_naming_the_packages_and_the_command(tmp_path):
    calls = tmp_path / "apt-calls"
    path = _bin(
        tmp_path, id="echo 0", **{"apt-get": f'echo "$@" >> {calls}; echo "E: no network" >&2; exit 100'}
    )

    result = _run(path)

    assert result.returncode == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, result.stderr
    assert all(package in error[0] for package in PACKAGES)
    assert "apt-get install -y" in error[0]
    assert calls.read_text().startswith("update")  # it tried, as root, before giving up


def test_a_user_who_is_not_root_is_told_the_sudo_command(tmp_path):
    result = _run(_bin(tmp_path, id="echo 1000", **{"apt-get": "exit 0"}))

    assert result.returncode == 1
    assert f"sudo apt-get install -y {' '.join(PACKAGES)}" in result.stderr


def test_without_apt_get_at_all_it_names_the_packages(tmp_path):
    result = _run(_bin(tmp_path, id="echo 0"))

    assert result.returncode == 1
    assert "apt-get is not available" in result.stderr
    assert all(package in result.stderr for package in PACKAGES)


def test_with_every_package_present_it_installs_nothing(tmp_path):
    present = {command: "exit 0" for command in ("chromium", "tesseract", "nginx", "dciodvfy")}
    calls = tmp_path / "apt-calls"
    result = _run(_bin(tmp_path, id="echo 0", **{"apt-get": f"echo called >> {calls}"}, **present))

    assert result.returncode == 0, result.stderr
    assert not calls.exists()


def test_this_machine_has_what_the_tests_use():
    """`make test` ran the script before this test: every command is here now."""
    found = [
        shutil.which(command) or shutil.which(command, path="/usr/sbin")
        for command in ("chromium", "tesseract", "nginx", "dciodvfy")
    ]
    assert all(found), found
