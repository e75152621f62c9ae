"""A real deployment on loopback, from provisioned kits: a TLS SuperLink with SuperNode authentication, three
SuperNodes (each with its own work folder and runtime port) and a 2-round run on a tiny synthetic federation.

Every Flower process is started through our commands (`coordinator start`, `site start`, `run`), each in its own
process, exactly as an operator runs them; the fixture stops them all, also when a test fails, and checks that
nothing with one of our FLWR_HOMEs is left (no orphaned SuperExec).
"""

import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from data_prep.synth.federation import write_federation
from deploy import certificates as certs
from deploy.coordinator import coordinator_env, register_sites
from deploy.federated_run import CoordinatorNotRunning, check_coordinator_running, plan_run
from deploy.flower_env import flower_env
from deploy.kit import read_coordinator_kit, read_site_kit
from deploy.preflight import check_kit
from deploy.processes import StartedProcess, free_port, processes_with_env, start_process, stop_tree, tail
from deploy.provision import provision, read_spec
from deploy.site_launcher import SiteStartError, start_supernode, wait_until_connected, write_node_config
from models.exit_codes import ExitCode

FEDERATION = "oncofed-loopback"


def command(*args: str) -> list[str]:
    """An `oncofed` command line, run by this Python as an operator runs it."""
    return [sys.executable, "-m", "oncofed_cli", *args]


def start_command(name: str, log: Path, *args: str) -> StartedProcess:
    return start_process(name, command(*args), dict(os.environ), log)


def wait_for_line(process: StartedProcess, text: str, timeout_s: float = 90.0) -> None:
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


def fill_site_toml(kit_dir: Path, data: Path, work: Path) -> None:
    """What hospital IT does: replace the placeholders (and pick a free runtime port: sites share this host)."""
    site_toml = kit_dir / "site.toml"
    lines = []
    for line in site_toml.read_text().splitlines():
        if line.startswith("data-path ="):
            line = f'data-path = "{data}"'
        elif line.startswith("work-path ="):
            line = f'work-path = "{work}"'
        elif line.startswith("runtime-port ="):
            line = f"runtime-port = {free_port()}"
        elif line.startswith("min-report-cases ="):
            line = "min-report-cases = 1"  # tiny sites validate on one or two cases
        elif line.startswith("min-train-cases ="):
            line = "min-train-cases = 1"  # and train on three to five
        lines.append(line)
    site_toml.write_text("\n".join(lines) + "\n")


def write_spec(path: Path, sites: list[str], port: int) -> Path:
    path.write_text(
        f'federation = "{FEDERATION}"\nsites = {json.dumps(sites)}\n\n'
        f'[coordinator]\naddresses = ["localhost"]\nport = {port}\nbind-host = "127.0.0.1"\n'
    )
    return path


@dataclass
class Deployment:
    root: Path
    data: Path
    kits: Path
    sites: list[str]
    port: int
    flwr_homes: list[Path]


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
    for pid in orphans:
        stop_tree(pid, grace_s=2)
    return orphans


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Deployment:
    root = tmp_path_factory.mktemp("deployment")
    data = root / "data"
    write_federation(data, n_sites=3, seed=5, preset="tiny")
    sites = sorted(folder.name for folder in data.iterdir())
    port = free_port()
    kits = root / "kits"
    provision(read_spec(write_spec(root / "spec.toml", sites, port)), kits)
    for site in sites:
        fill_site_toml(kits / "sites" / site, data / site, root / "work" / site)
    flwr_homes = [
        kits / "coordinator" / "flwr-home",
        *(root / "work" / site / "flower-home" for site in sites),
    ]

    started: list[StartedProcess] = []
    try:
        coordinator = start_command(
            "coordinator start",
            root / "logs" / "coordinator.out",
            "coordinator",
            "start",
            "--kit",
            str(kits / "coordinator"),
        )
        started.append(coordinator)
        wait_for_line(coordinator, "submit a run:")
        for site in sites:
            process = start_command(
                f"site start {site}",
                root / "logs" / f"{site}.out",
                "site",
                "start",
                "--kit",
                str(kits / "sites" / site),
            )
            started.append(process)
        for process in started[1:]:
            wait_for_line(process, "connected to the coordinator as node")
        yield Deployment(root=root, data=data, kits=kits, sites=sites, port=port, flwr_homes=flwr_homes)
    finally:
        orphans = stop_all(started, flwr_homes)
    assert orphans == [], f"processes outlived the command that started them: {orphans}"


def test_three_sites_two_rounds(deployment):
    """`oncofed run` against the kit's SuperLink: all three sites' metrics for rounds 0-2 reach the run folder."""
    run_log = deployment.root / "logs" / "run.out"
    runner = start_command(
        "run",
        run_log,
        "run",
        "--kit",
        str(deployment.kits / "coordinator"),
        "--rounds",
        "2",
        "--preset",
        "tiny",
        "--run-config",
        "local-epochs=1",
    )
    try:
        code = runner.popen.wait(timeout=420)
    finally:
        runner.stop()
    output = run_log.read_text(errors="replace")
    assert code == 0, output[-4000:]

    run_dirs = list((deployment.kits / "coordinator" / "runs").iterdir())
    assert len(run_dirs) == 1
    records = [json.loads(line) for line in (run_dirs[0] / "metrics.jsonl").read_text().splitlines()]
    assert sorted((r["round"], r["site"]) for r in records) == [
        (rnd, site) for rnd in (0, 1, 2) for site in deployment.sites
    ]
    assert all(
        r.get("status", "reported") == "reported" and 0 <= r["metrics"]["dice-mean"] <= 1 for r in records
    )
    assert (run_dirs[0] / "summary.json").is_file() and (run_dirs[0] / "models" / "final.pt").is_file()
    for site in deployment.sites:
        assert site in output  # the per-site table

    # privacy: the coordinator's logs name sites, never cases or files
    coordinator_logs = output + (deployment.kits / "coordinator" / "logs" / "superlink.log").read_text()
    for site in deployment.sites:
        assert f"{site}-00" not in coordinator_logs


def test_registering_the_sites_again_is_fine(deployment):
    """`coordinator start` after a restart finds the keys registered in its database: not an error."""
    kit = read_coordinator_kit(deployment.kits / "coordinator")
    registrations = register_sites(kit, coordinator_env(kit))
    assert [(r.site, r.outcome) for r in registrations] == [
        (site, "already registered") for site in deployment.sites
    ]


def test_site_check_passes_on_a_connected_site(deployment):
    results = check_kit(deployment.kits / "sites" / deployment.sites[0])
    assert [r.problem for r in results if r.status == "error"] == [], results
    assert any(r.check == "coordinator" and r.status == "ok" for r in results)


def test_unregistered_key_is_refused(deployment, tmp_path):
    """A site added to the spec later gets a complete kit, but its key is not registered at the running
    coordinator: Flower refuses it, and `site start` says so. Provisioning leaves the existing kits as they were."""
    kits = tmp_path / "kits"
    shutil.copytree(deployment.kits, kits, ignore=shutil.ignore_patterns("state", "logs", "runs"))
    report = provision(
        read_spec(write_spec(tmp_path / "spec.toml", [*deployment.sites, "hospital-x"], deployment.port)),
        kits,
    )
    assert report.created == ["hospital-x"] and report.kept == deployment.sites
    for site in deployment.sites:
        for file in (deployment.kits / "sites" / site).rglob("*"):
            if file.is_file():
                assert (
                    file.read_bytes()
                    == (
                        kits / "sites" / site / file.relative_to(deployment.kits / "sites" / site)
                    ).read_bytes()
                ), file
    assert read_coordinator_kit(kits / "coordinator").sites == [*deployment.sites, "hospital-x"]

    new_kit = kits / "sites" / "hospital-x"
    fill_site_toml(new_kit, deployment.data / deployment.sites[0], tmp_path / "work-x")
    process = start_command(
        "site start hospital-x", tmp_path / "site-x.out", "site", "start", "--kit", str(new_kit)
    )
    try:
        code = process.popen.wait(timeout=90)
    finally:
        process.stop()
    output = (tmp_path / "site-x.out").read_text()
    assert code == ExitCode.FAILED, output
    assert "refused this site's key" in output and "not registered" in output
    assert processes_with_env("FLWR_HOME", str((tmp_path / "work-x" / "flower-home").resolve())) == []


def test_wrong_ca_fails_with_a_clear_message(deployment, tmp_path):
    """A kit whose CA is not the coordinator's: the pre-flight names it before Flower starts, and a SuperNode
    started anyway is refused by TLS, with the same explanation."""
    kit_dir = tmp_path / "kit"
    shutil.copytree(deployment.kits / "sites" / deployment.sites[0], kit_dir)
    fill_site_toml(kit_dir, deployment.data / deployment.sites[0], tmp_path / "work")
    _, other_ca = certs.make_ca("another-federation")
    (kit_dir / "certs" / "ca.crt").write_bytes(certs.certificate_pem(other_ca))

    result = subprocess.run(
        command("site", "start", "--kit", str(kit_dir)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == ExitCode.BAD_INPUT
    assert (
        "not signed by this kit's CA" in result.stderr and str(kit_dir / "certs" / "ca.crt") in result.stderr
    )

    kit = read_site_kit(kit_dir)
    supernode, offset = start_supernode(kit)
    try:
        with pytest.raises(SiteStartError, match="not signed by this kit's CA"):
            wait_until_connected(kit, supernode, offset, timeout_s=60)
    finally:
        supernode.stop()
    assert processes_with_env("FLWR_HOME", str(kit.flwr_home.resolve())) == []


def test_plain_http_gets_no_service(deployment):
    """The SuperLink speaks only TLS: a plain-HTTP request gets no HTTP answer at all; the same over TLS does."""
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        urllib.request.urlopen(f"http://127.0.0.1:{deployment.port}/health", timeout=10)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        request = urllib.request.Request(
            f"http://127.0.0.1:{deployment.port}/v1/fleet/create-node", data=b"", method="POST"
        )
        urllib.request.urlopen(request, timeout=10)
    context = ssl.create_default_context(cafile=str(deployment.kits / "coordinator" / "certs" / "ca.crt"))
    with urllib.request.urlopen(
        f"https://127.0.0.1:{deployment.port}/health", timeout=10, context=context
    ) as answer:
        assert answer.status == 200


def test_run_settings_are_checked_before_submitting(tmp_path):
    provision(read_spec(write_spec(tmp_path / "spec.toml", ["site-1"], free_port())), tmp_path / "kits")
    kit = read_coordinator_kit(tmp_path / "kits" / "coordinator")
    plan = plan_run(kit, 3, "tiny", "local-epochs=1 min-sites=1")
    assert plan.run_config["local-epochs"] == 1 and plan.run_config["min-sites"] == 1
    assert plan.run_config["num-server-rounds"] == 3 and plan.run_dir.parent == kit.runs
    with pytest.raises(ValueError, match="unknown key 'epochs'"):
        plan_run(kit, 3, "tiny", "epochs=1")
    with pytest.raises(ValueError, match="run-dir"):
        plan_run(kit, 3, "tiny", 'run-dir="/tmp/x"')
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        plan_run(kit, 3, "huge")
    with pytest.raises(CoordinatorNotRunning, match="oncofed coordinator start --kit"):
        check_coordinator_running(kit)


@pytest.mark.slow
def test_trusted_entities_refuse_locally_built_apps(tmp_path):
    """Why the kits claim no app signing: Flower 1.42 verifies signatures only for apps the SuperLink fetched from
    Flower Hub, so a SuperNode given `--trusted-entities` refuses every app submitted from a local folder.
    A tripwire: when this fails, Flower can verify local apps and sites can be restricted to signed ones."""
    write_federation(tmp_path / "data", n_sites=1, seed=2, preset="tiny")
    (site,) = [folder.name for folder in (tmp_path / "data").iterdir()]
    provision(read_spec(write_spec(tmp_path / "spec.toml", [site], free_port())), tmp_path / "kits")
    fill_site_toml(tmp_path / "kits" / "sites" / site, tmp_path / "data" / site, tmp_path / "work")
    kit = read_site_kit(tmp_path / "kits" / "sites" / site)
    publisher = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    (tmp_path / "trusted.yaml").write_text(f"fpk_oncofed: '{publisher.decode()}'\n")

    started: list[StartedProcess] = []
    try:
        coordinator = start_command(
            "coordinator start",
            tmp_path / "coordinator.out",
            "coordinator",
            "start",
            "--kit",
            str(tmp_path / "kits" / "coordinator"),
        )
        started.append(coordinator)
        wait_for_line(coordinator, "submit a run:")
        supernode = start_process(
            "flower-supernode",
            [
                str(Path(sys.executable).parent / "flower-supernode"),
                "--root-certificates",
                str(kit.ca_certificate),
                "--superlink",
                kit.settings.coordinator,
                "--auth-supernode-private-key",
                str(kit.private_key),
                "--node-config",
                str(write_node_config(kit)),
                "--port",
                str(kit.settings.runtime_port),
                "--trusted-entities",
                str(tmp_path / "trusted.yaml"),
            ],
            flower_env(kit.flwr_home),
            tmp_path / "sn.log",
        )
        started.append(supernode)
        runner = start_command(
            "run",
            tmp_path / "run.out",
            "run",
            "--kit",
            str(tmp_path / "kits" / "coordinator"),
            "--rounds",
            "1",
            "--preset",
            "tiny",
        )
        started.append(runner)
        assert runner.popen.wait(timeout=600) == ExitCode.FAILED
    finally:
        stop_all(started, [tmp_path / "kits" / "coordinator" / "flwr-home", kit.flwr_home])
    assert "no site sent results" in (tmp_path / "run.out").read_text()
    assert "App verification is not supported by the connected SuperLink" in (tmp_path / "sn.log").read_text()
