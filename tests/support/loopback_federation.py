"""A loopback deployment run through the `oncofed` command itself (`coordinator start`, `site start`, `run`),
with TLS and SuperNode authentication from provisioned kits, for tests that take sites and the coordinator down
and bring them back.

`crash` kills a command's whole process tree at once (SIGKILL: a power cut, nothing gets to say goodbye);
`stop` ends it as an operator would (SIGTERM). `close` stops everything still running and returns the pids of
Flower processes that outlived their command (there should be none).
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from federation_kits import TINY_LOWER_BOUNDS

from data_prep.synth.federation import write_federation
from deploy.kits.federation_spec import read_spec
from deploy.kits.provision import provision
from deploy.processes import (
    StartedProcess,
    free_port,
    process_tree,
    processes_with_env,
    start_process,
    stop_trees,
    tail,
)

ONCOFED = str(Path(sys.executable).parent / "oncofed")


def write_spec(path: Path, federation: str, sites: list[str], port: int) -> Path:
    path.write_text(
        f'federation = "{federation}"\nsites = {json.dumps(sites)}\n\n'
        f'[coordinator]\naddresses = ["localhost"]\nport = {port}\nsuperlink-port = {free_port()}\n'
        'bind-host = "127.0.0.1"\n'
    )
    return path


def fill_site_toml(kit_dir: Path, data: Path, work: Path) -> None:
    """What hospital IT does: the data and work folders, a free runtime port (sites share this host), and
    minimums of one case (tiny sites validate on one or two cases and train on three to five), confirmed with
    `i-understand`, and lower bounds of 1 against gradient inversion (TINY_LOWER_BOUNDS: a few patches, one step)."""
    values = {
        "data-path": json.dumps(str(data)),
        "work-path": json.dumps(str(work)),
        "runtime-port": str(free_port()),
        "min-report-cases": "1",
        "min-train-cases": "1",
        "i-understand": "true",
    }
    site_toml = kit_dir / "site.toml"
    lines = []
    for line in site_toml.read_text().splitlines():
        key = line.split("=")[0].strip()
        lines.append(f"{key} = {values[key]}" if key in values and "=" in line else line)
    lines += ["[limits]", *(f"{key} = 1" for key in TINY_LOWER_BOUNDS)]
    site_toml.write_text("\n".join(lines) + "\n")


def wait_for_text(
    path: Path, text: str, timeout_s: float, process: StartedProcess | None = None, times: int = 1
) -> None:
    """Until `text` appears in the file (`times` times); AssertionError with the file's tail if not in time (or if
    `process` exits first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text(errors="replace").count(text) >= times:
            return
        if process is not None and process.popen.poll() is not None:
            raise AssertionError(f"{process.name} exited with {process.popen.returncode}:\n{tail(path, 40)}")
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not in {path} within {timeout_s:.0f} s:\n{tail(path, 40)}")


@dataclass
class LoopbackFederation:
    root: Path
    sites: list[str]
    port: int
    processes: dict[str, StartedProcess] = field(default_factory=dict)

    @property
    def coordinator_kit(self) -> Path:
        return self.root / "kits" / "coordinator"

    def site_kit(self, site: str) -> Path:
        return self.root / "kits" / "sites" / site

    def output(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.out"

    @property
    def flwr_homes(self) -> list[Path]:
        return [
            self.coordinator_kit / "flwr-home",
            *(self.root / "work" / s / "flower-home" for s in self.sites),
        ]

    @classmethod
    def provision(cls, root: Path, n_sites: int = 3, seed: int = 5) -> "LoopbackFederation":
        data = root / "data"
        write_federation(data, n_sites=n_sites, seed=seed, preset="tiny")
        sites = sorted(folder.name for folder in data.iterdir())
        port = free_port()
        spec = read_spec(write_spec(root / "spec.toml", "oncofed-resilience", sites, port))
        provision(spec, root / "kits", generate_site_keys=True)  # a test federation: keys made here
        for site in sites:
            fill_site_toml(root / "kits" / "sites" / site, data / site, root / "work" / site)
        return cls(root=root, sites=sites, port=port)

    def command(self, name: str, *args: str) -> StartedProcess:
        """`oncofed ARGS` in its own session, output appended to logs/<name>.out."""
        process = start_process(name, [ONCOFED, *args], dict(os.environ), self.output(name))
        self.processes[name] = process
        return process

    def start_coordinator(self) -> None:
        offset = self.output("coordinator").stat().st_size if self.output("coordinator").exists() else 0
        process = self.command("coordinator", "coordinator", "start", "--kit", str(self.coordinator_kit))
        deadline = time.monotonic() + 120
        while "submit a run" not in self.output("coordinator").read_text(errors="replace")[offset:]:
            if process.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"coordinator did not start:\n{tail(self.output('coordinator'), 40)}")
            time.sleep(0.5)

    def start_site(self, site: str, wait: bool = True) -> None:
        name = f"site-{site}"
        offset = self.output(name).stat().st_size if self.output(name).exists() else 0
        process = self.command(name, "site", "start", "--kit", str(self.site_kit(site)))
        deadline = time.monotonic() + 120
        while (
            wait
            and "connected to the coordinator as node"
            not in self.output(name).read_text(errors="replace")[offset:]
        ):
            if process.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{site} did not connect:\n{tail(self.output(name), 40)}")
            time.sleep(0.5)

    def crash(self, name: str) -> None:
        """SIGKILL the command and every process below it at once."""
        process = self.processes.pop(name)
        for pid, _ in process_tree(process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.popen.wait(timeout=30)

    def stop(self, name: str) -> None:
        """SIGTERM the command, as systemd would; it stops its Flower processes itself."""
        process = self.processes.pop(name)
        process.popen.send_signal(signal.SIGTERM)
        try:
            process.popen.wait(timeout=60)
        finally:
            process.stop()

    def run(self, name: str, *args: str) -> StartedProcess:
        return self.command(name, "run", "--kit", str(self.coordinator_kit), *args)

    def run_dirs(self) -> list[Path]:
        runs = self.coordinator_kit / "runs"
        return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []

    def close(self) -> list[int]:
        for name in list(self.processes):
            process = self.processes.pop(name)
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):  # then by force, below
                    process.popen.wait(timeout=40)
            process.stop()
        orphans = [
            pid for home in self.flwr_homes for pid in processes_with_env("FLWR_HOME", str(home.resolve()))
        ]
        stop_trees(orphans, grace_s=2)
        return orphans
