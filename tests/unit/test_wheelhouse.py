"""A site kit's lock (deploy/kits/wheelhouse.py): every runtime dependency at the version installed here, each with
its wheel's SHA-256, taken from the wheel cache without a download; real pip installs exactly those files offline
and refuses a wheel with one byte changed."""

import hashlib
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from tiny_wheels import write_wheel

from deploy.kits import wheelhouse
from deploy.kits.wheelhouse import (
    HASH_MEMO,
    LOCK_FILE,
    WHEELS_DIR,
    Pin,
    WheelhouseError,
    copy_wheels,
    lock_text,
    locked_wheels,
    runtime_pins,
)

HASH_ERROR = "DO NOT MATCH THE HASHES"


def offline_pip_env() -> dict[str, str]:
    """pip with no configuration and no extra sources: only what the command names."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@pytest.fixture
def no_download(monkeypatch):
    """A test of the cache fails if the cache would go to the index."""

    def refuse(pins, cache):
        raise AssertionError(f"pip download was called for {pins}")

    monkeypatch.setattr(wheelhouse, "_download", refuse)


def test_runtime_pins_follow_requested_extras_and_leave_out_optional_ones(tmp_path):
    wheel = write_wheel(
        tmp_path, "oncofed", "0.1.0", requires=("flwr[simulation]==1.42.*", 'pytest>=8; extra == "dev"')
    )
    pins = {pin.name: pin.version for pin in runtime_pins(wheel)}
    assert pins["flwr"] == version("flwr")
    assert pins["ray"] == version("ray")  # only through flwr's `simulation` extra
    assert "pytest" not in pins  # the wheel's own optional extra
    assert list(pins) == sorted(pins)


def test_the_project_wheel_pins_cpu_torch_and_no_dev_tool(tmp_path):
    """The oncofed wheel's closure: the CPU torch build at the installed version, no test or lint tool."""
    requires = ("torch>=2.8,<2.14", "flwr[simulation,dp]==1.42.*", "mlflow>=3.5,<4", 'ruff; extra == "dev"')
    pins = {
        pin.name: pin.version for pin in runtime_pins(write_wheel(tmp_path, "oncofed", "0.1.0", requires))
    }
    assert pins["torch"] == version("torch") and "dp-accounting" in pins
    assert not {"pytest", "ruff", "import-linter", "oncofed"} & set(pins)


def test_a_dependency_not_installed_is_named(tmp_path):
    wheel = write_wheel(tmp_path, "oncofed", "0.1.0", requires=("no-such-distribution-here>=1",))
    with pytest.raises(WheelhouseError, match="no-such-distribution-here .*make install"):
        runtime_pins(wheel)


def test_locked_wheels_come_from_the_cache_and_are_hashed_once(tmp_path, no_download):
    cache = tmp_path / "cache"
    alpha, beta = write_wheel(cache, "alpha", "1.0"), write_wheel(cache, "beta-gamma", "2.0")
    write_wheel(cache, "alpha", "0.9")  # another version is never taken
    locked = locked_wheels([Pin("alpha", "1.0"), Pin("beta-gamma", "2.0")], cache)
    assert [(w.pin.name, w.path, w.sha256) for w in locked] == [
        ("alpha", alpha, hashlib.sha256(alpha.read_bytes()).hexdigest()),
        ("beta-gamma", beta, hashlib.sha256(beta.read_bytes()).hexdigest()),
    ]
    assert (cache / HASH_MEMO).is_file()
    assert locked_wheels([Pin("alpha", "1.0")], cache)[0].sha256 == locked[0].sha256


def test_a_wheel_missing_from_the_cache_is_downloaded(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    asked = []

    def download(pins, folder):  # stands in for the index: the wheel appears in the cache
        asked.extend(pins)
        write_wheel(folder, "alpha", "1.0")

    monkeypatch.setattr(wheelhouse, "_download", download)
    assert locked_wheels([Pin("alpha", "1.0")], cache)[0].path.parent == cache
    assert asked == [Pin("alpha", "1.0")]


def test_pip_installs_the_lock_offline_and_refuses_a_changed_wheel(tmp_path, no_download):
    cache, kit = tmp_path / "cache", tmp_path / "kit"
    write_wheel(cache, "alpha", "1.0", modules={"alpha": "VALUE = 1\n"})
    package = write_wheel(kit / "packages", "oncofed", "0.1.0", requires=("alpha==1.0",))
    locked = locked_wheels([Pin("alpha", "1.0")], cache)
    assert copy_wheels(locked, kit / WHEELS_DIR) == locked[0].path.stat().st_size
    lock = lock_text(locked, package, f"packages/{package.name}")
    (kit / LOCK_FILE).write_text(lock)
    assert f"alpha==1.0 \\\n    --hash=sha256:{locked[0].sha256}" in lock
    assert lock.rstrip().endswith(f"--hash=sha256:{hashlib.sha256(package.read_bytes()).hexdigest()}")

    def install(target: Path) -> subprocess.CompletedProcess:
        command = ["install", "--no-index", "--find-links", WHEELS_DIR, "--require-hashes", "-r", LOCK_FILE]
        return subprocess.run(
            [sys.executable, "-m", "pip", *command, "--target", str(target)],
            cwd=kit,
            env=offline_pip_env(),
            capture_output=True,
            text=True,
            check=False,
        )

    installed = install(tmp_path / "first")
    assert installed.returncode == 0, installed.stderr
    assert (tmp_path / "first" / "alpha.py").read_text() == "VALUE = 1\n"

    wheel = kit / WHEELS_DIR / locked[0].path.name
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0x01  # one byte changed
    wheel.write_bytes(bytes(data))
    refused = install(tmp_path / "second")
    assert refused.returncode != 0 and HASH_ERROR in refused.stderr, refused.stderr
    assert not (tmp_path / "second" / "alpha.py").exists()
