"""Building real federations for tests the way operators do: hospitals make their key pairs, the coordinator
provisions from their public keys, hospital IT fills in site.toml, and every command runs as `oncofed …` in its
own process (deploy/processes.py starts and stops them by pid)."""

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.kits.site_keys import SiteKeyPair, generate_site_keys
from deploy.processes import StartedProcess, free_port, processes_with_env, start_process, stop_trees, tail

ONCOFED = str(Path(sys.executable).parent / "oncofed")
PRIVATE_KEY_MARKERS = (b"-----BEGIN OPENSSH PRIVATE KEY-----", b"PRIVATE KEY-----")
"""OpenSSH and PEM private-key headers (PEM: `-----BEGIN [EC |RSA ]PRIVATE KEY-----`)."""


def oncofed(*args: str) -> list[str]:
    """The `oncofed` command line, from this environment."""
    return [ONCOFED, *args]


def run_oncofed(*args: str, timeout: float = 300, env: dict | None = None, stdin: str | None = None):
    return subprocess.run(
        oncofed(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        input=stdin,
    )


def start_oncofed(name: str, log: Path, *args: str) -> StartedProcess:
    return start_process(name, oncofed(*args), dict(os.environ), log)


def make_site_keys(root: Path, sites: list[str]) -> dict[str, SiteKeyPair]:
    """Each hospital's own pair, made with `oncofed site keygen`'s function, in a folder outside any kit."""
    return {site: generate_site_keys(root / site, comment=site) for site in sites}


def write_spec(
    path: Path,
    federation: str,
    sites: list[str],
    port: int,
    public_keys: dict[str, Path] | None = None,
    superlink_port: int | None = None,
) -> Path:
    """A spec naming each site's public key ([sites.NAME] public-key), or only the names."""
    lines = [
        f'federation = "{federation}"',
        "",
        "[coordinator]",
        'addresses = ["localhost"]',
        f"port = {port}",
        f"superlink-port = {superlink_port or free_port()}",
        'bind-host = "127.0.0.1"',
        "",
    ]
    if public_keys is None:
        lines.insert(1, f"sites = {json.dumps(sites)}")
    else:
        for site in sites:
            lines += [f"[sites.{site}]", f'public-key = "{public_keys[site]}"', ""]
    path.write_text("\n".join(lines) + "\n")
    return path


def fill_site_toml(kit_dir: Path, data: Path, work: Path, private_key: Path | None) -> None:
    """What hospital IT does: replace the placeholders (and pick a free runtime port: sites share this host)."""
    site_toml = kit_dir / "site.toml"
    lines = []
    for line in site_toml.read_text().splitlines():
        if line.startswith("data-path ="):
            line = f'data-path = "{data}"'
        elif line.startswith("work-path ="):
            line = f'work-path = "{work}"'
        elif line.startswith("private-key =") and private_key is not None:
            line = f'private-key = "{private_key}"'
        elif line.startswith("runtime-port ="):
            line = f"runtime-port = {free_port()}"
        elif line.startswith("min-report-cases ="):
            line = "min-report-cases = 1"  # tiny sites validate on one or two cases
        elif line.startswith("min-train-cases ="):
            line = "min-train-cases = 1"  # and train on three to five
        elif line.startswith("i-understand ="):
            line = "i-understand = true"  # confirms the two thresholds above, below their defaults
        lines.append(line)
    if "[limits]" not in lines:  # a copied kit may have been filled already
        lines += ["[limits]", *(f"{key} = 1" for key in TINY_LOWER_BOUNDS)]
    site_toml.write_text("\n".join(lines) + "\n")


TINY_LOWER_BOUNDS = ("batch-size-min", "samples-per-case-min", "local-steps-min")
"""Tiny test sites lower their own bounds against gradient inversion (site_app.settings.limits) to train a few
patches in one step."""


def wait_for_line(process: StartedProcess, text: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in process.log_path.read_text(errors="replace"):
            return
        if process.popen.poll() is not None:
            pytest.fail(
                f"{process.name} exited with {process.popen.returncode}:\n{tail(process.log_path, 40)}"
            )
        time.sleep(0.3)
    pytest.fail(
        f"{process.name} did not print {text!r} within {timeout_s:.0f} s:\n{tail(process.log_path, 40)}"
    )


def stop_all(started: list[StartedProcess], flwr_homes: list[Path]) -> list[int]:
    """SIGTERM each command alone first (its own handler must stop its Flower tree), then stop any tree left;
    returns the pids that survived their command (there should be none)."""
    for process in reversed(started):
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGTERM)
    for process in reversed(started):
        try:
            process.popen.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.stop()
    orphans = [pid for home in flwr_homes for pid in processes_with_env("FLWR_HOME", str(home.resolve()))]
    stop_trees(orphans, grace_s=2)
    return orphans


def private_key_files(root: Path) -> list[Path]:
    """Every file under `root` holding an OpenSSH or PEM private key."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and any(marker in path.read_bytes() for marker in PRIVATE_KEY_MARKERS):
            found.append(path)
    return found


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that process `pid` holds (from /proc: its socket
    inodes matched against /proc/net/tcp and tcp6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    listening = set()
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: TCP_LISTEN
                continue
            address, port = local.split(":")
            listening.add((_proc_address(address, size), int(port, 16)))
    return listening


def _proc_address(hex_address: str, size: int) -> str:
    """/proc/net/tcp writes addresses as little-endian 32-bit words in hex."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, size, 4))
    return str(ipaddress.ip_address(words))
