"""A real deployment on loopback, from provisioned kits, driven by `oncofed` commands in their own processes.

Two hospitals make their own key pairs; the coordinator provisions from the public halves, its CA folder is then
moved out of reach (offline), and `coordinator start` runs the SuperLink on 127.0.0.1 behind nginx on the public
port. Each site runs its SuperNode with the site's code-approval gate. The tests train with the release app, show
that a changed app is refused at both sites before its code runs, that a site claiming another's name is filed
under the name its key was registered under, that members cannot reach the Control API
through the public port while the sites train through it, that no site's private key exists at the coordinator,
and that an added site is registered and a revoked one refused without restarting the coordinator. The fixture
stops every process, also when a test fails, and checks that nothing with one of our FLWR_HOMEs is left.
"""

import http.client
import json
import os
import re
import shlex
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
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from federation_kits import (
    fill_site_toml,
    listening_addresses,
    make_site_keys,
    private_key_files,
    run_oncofed,
    start_oncofed,
    stop_all,
    wait_for_line,
    write_spec,
)
from offline_install import OFFLINE, clean_env

from data_prep.synth.federation import write_federation
from deploy.coordinator.run_submission import CoordinatorNotRunning, check_coordinator_running, plan_run
from deploy.coordinator.start import register_sites
from deploy.flower_env import app_directory, flower_env, write_connection
from deploy.kits import certificates as certs
from deploy.kits.contents import KIT_FILE, SITE_FILE, read_coordinator_kit, read_site_kit
from deploy.kits.federation_spec import read_spec
from deploy.kits.provision import provision
from deploy.kits.release_fab import build_fab, sha256_hex, unpack_for_submission
from deploy.processes import (
    ProcessGroup,
    StartedProcess,
    free_port,
    process_tree,
    processes_with_env,
    start_process,
)
from deploy.site.launcher import HEARTBEAT_WINDOW_S, SiteStartError, start_site, wait_until_connected
from deploy.site.preflight import check_kit
from models.shared.exit_codes import ExitCode
from models.shared.wire import APP_NOT_APPROVED
from server_app.run_record.run_folder import read_refusals

FEDERATION = "oncofed-loopback"
RUN_TIMEOUT_S = 600


@dataclass
class Deployment:
    root: Path
    data: Path
    kits: Path
    sites: list[str]
    port: int
    keys: dict
    coordinator: StartedProcess
    flwr_homes: list[Path]
    started: list[StartedProcess]

    @property
    def coordinator_kit(self) -> Path:
        return self.kits / "coordinator"

    def start_site(self, site: str, kit_dir: Path) -> StartedProcess:
        process = start_oncofed(
            f"site start {site}", self.root / "logs" / f"{site}.out", "site", "start", "--kit", str(kit_dir)
        )
        self.started.append(process)
        return process

    def add_site(self, site: str, data_site: str) -> tuple[Path, Path]:
        """A hospital joins: it makes its key pair, the coordinator adds it with `provision --add-site` while
        running; returns (kit, private key). The site reads another site's data (only read) into its own work."""
        pair = make_site_keys(self.root / "hospital-keys", [site])[site]
        result = run_oncofed(
            "provision",
            str(self.root / "spec.toml"),
            "--out",
            str(self.kits),
            "--add-site",
            site,
            "--public-key",
            str(pair.public),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{site}: registered on the running coordinator" in result.stdout, result.stdout
        kit_dir = self.kits / "sites" / site
        fill_site_toml(kit_dir, self.data / data_site, self.root / "work" / site, pair.private)
        self.flwr_homes.append(self.root / "work" / site / "flower-home")
        return kit_dir, pair.private


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Deployment:
    root = tmp_path_factory.mktemp("deployment")
    data = root / "data"
    write_federation(data, n_sites=2, seed=5, preset="tiny")
    sites = sorted(folder.name for folder in data.iterdir())
    keys = make_site_keys(root / "hospital-keys", sites)
    port = free_port()
    write_spec(root / "spec.toml", FEDERATION, sites, port, {s: keys[s].public for s in sites})
    kits = root / "kits"
    result = run_oncofed("provision", str(root / "spec.toml"), "--out", str(kits), "--ca", str(root / "ca"))
    assert result.returncode == 0, result.stdout + result.stderr
    (root / "ca").rename(root / "ca-offline")  # the CA goes offline: nothing at run time may need it
    for site in sites:
        fill_site_toml(kits / "sites" / site, data / site, root / "work" / site, keys[site].private)
    flwr_homes = [
        kits / "coordinator" / "flwr-home",
        *(root / "work" / site / "flower-home" for site in sites),
    ]

    started: list[StartedProcess] = []
    try:
        coordinator = start_oncofed(
            "coordinator start",
            root / "logs" / "coordinator.out",
            "coordinator",
            "start",
            "--kit",
            str(kits / "coordinator"),
        )
        started.append(coordinator)
        wait_for_line(coordinator, "submit a run")
        deployment = Deployment(root, data, kits, sites, port, keys, coordinator, flwr_homes, started)
        for site in sites:
            deployment.start_site(site, kits / "sites" / site)
        for process in started[1:]:
            wait_for_line(process, "connected to the coordinator as node")
        yield deployment
    finally:
        orphans = stop_all(started, flwr_homes)
    assert orphans == [], f"processes outlived the command that started them: {orphans}"


def run_command(deployment: Deployment, name: str, *args: str) -> tuple[int, str]:
    """`oncofed run …` against the fixture's coordinator; (exit code, its output)."""
    log = deployment.root / "logs" / f"{name}.out"
    runner = start_oncofed(name, log, "run", "--kit", str(deployment.coordinator_kit), *args)
    try:
        code = runner.popen.wait(timeout=RUN_TIMEOUT_S)
    finally:
        runner.stop()
    return code, log.read_text(errors="replace")


def changed_app_fab(tmp_path: Path, marker: Path) -> Path:
    """The release's source with one line changed: importing the ClientApp creates `marker`. Built as Flower
    builds FABs (the coordinator would use `flwr build`)."""
    source = app_directory()
    app = tmp_path / "changed-app"
    app.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(source / name, app / name)
    for package in ("models", "site_app", "server_app", "data_prep"):
        shutil.copytree(source / package, app / package, ignore=shutil.ignore_patterns("__pycache__"))
    client = app / "site_app" / "app.py"
    line = next(text for text in client.read_text().splitlines() if text.startswith("app = ClientApp("))
    client.write_text(
        client.read_text().replace(line, f"{line}; __import__('pathlib').Path({str(marker)!r}).touch()")
    )
    fab = tmp_path / "changed.fab"
    fab.write_bytes(build_fab(app))
    return fab


def test_two_sites_train_with_the_release(deployment):
    """`oncofed run --kit` submits the kit's release FAB (pre-approved at both sites): every site's metrics for
    rounds 0-2 reach the run folder, through the public port."""
    kit = read_coordinator_kit(deployment.coordinator_kit)
    code, output = run_command(
        deployment, "run", "--rounds", "2", "--preset", "tiny", "--run-config", "local-epochs=1 min-sites=2"
    )
    assert code == 0, output[-4000:]
    assert f"sha256 {kit.release_sha256}" in output

    run_dirs = sorted(kit.runs.iterdir())
    records = [json.loads(line) for line in (run_dirs[0] / "metrics.jsonl").read_text().splitlines()]
    assert sorted((r["round"], r["site"]) for r in records) == [
        (rnd, site) for rnd in (0, 1, 2) for site in deployment.sites
    ]
    assert all(r["status"] == "reported" and 0 <= r["metrics"]["dice-mean"] <= 1 for r in records)
    assert (run_dirs[0] / "summary.json").is_file() and (run_dirs[0] / "models" / "final.pt").is_file()
    assert read_refusals(run_dirs[0]) == []
    for site in deployment.sites:
        assert site in output  # the per-site table
        gate_log = (deployment.root / "work" / site / "logs" / "gate.log").read_text()
        assert f"app sha256 {kit.release_sha256} is approved; launching it" in gate_log
        assert (
            "ClientApp started warm" in gate_log
        )  # forked from the gate's zygote (deploy/site/warm_start.py)
    # the quorum is a majority of the kit's sites (here set: 2); one participation line per round
    words = " ".join(output.split())
    assert "quorum 2 of 2 sites" in words
    for server_round in (0, 1, 2):
        assert f"round {server_round}: 2 of 2 sites" in words
    summary = json.loads((run_dirs[0] / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_missed"] == {}
    assert (run_dirs[0] / "state" / "checkpoint.pt").is_file() and (
        run_dirs[0] / "models" / "latest.pt"
    ).is_file()

    # privacy: the coordinator's logs name sites, never cases or files
    coordinator_logs = output + (kit.logs / "superlink.log").read_text()
    for site in deployment.sites:
        assert f"{site}-00" not in coordinator_logs


def test_changed_app_is_refused_at_every_site(deployment, tmp_path):
    """The release with one line changed, submitted with `run --fab`: both gates refuse it before any of its code
    is imported (its marker file never appears), the coordinator names both sites and the reason in its log and
    run folder, and the run ends at once instead of waiting for replies."""
    marker = tmp_path / "changed-app-ran"
    fab = changed_app_fab(tmp_path, marker)
    fab_hash = sha256_hex(fab.read_bytes())
    code, output = run_command(  # a run that waited for replies would end only after round-timeout-s (2 h)
        deployment,
        "refused-run",
        "--rounds",
        "3",
        "--preset",
        "tiny",
        "--fab",
        str(fab),
        "--run-config",
        "min-sites=2",
    )
    assert code == ExitCode.REFUSED, output[-4000:]
    assert not marker.exists()

    run_dir = max(read_coordinator_kit(deployment.coordinator_kit).runs.iterdir())
    refusals = read_refusals(run_dir)
    assert {r["site"] for r in refusals} == set(deployment.sites)
    assert all(r["fab_sha256"] == fab_hash and r["reason"].startswith(APP_NOT_APPROVED) for r in refusals)
    assert not (run_dir / "metrics.jsonl").exists()
    server_log = (run_dir / "logs" / "flwr-run.log").read_text()
    assert "every site online refused this app" in server_log  # the run ended on the refusals, not a timeout
    # the operator gets one `error:` line; Flower's report of the stopped ServerApp stays in the run's log
    assert len([line for line in output.splitlines() if line.startswith("error:")]) == 1, output
    for shown in ("Traceback", "raised an exception", "Exit Code", "RunStopped"):
        assert shown not in output, output
    assert (
        "ServerApp raised an exception" in server_log and "Traceback (most recent call last):" in server_log
    )
    for site in deployment.sites:
        assert f"Site {site} refused the app" in server_log
        assert f"site {site} refused the app: {APP_NOT_APPROVED}" in output
        gate_log = (deployment.root / "work" / site / "logs" / "gate.log").read_text()
        assert f"refused app sha256 {fab_hash}" in gate_log


def test_refusals_and_results_of_a_site_claiming_another_name_go_under_its_registered_name(
    deployment, tmp_path
):
    """An attack: a hospital edits its own kit (kit.toml and site.toml, which it controls) to call itself
    hospital-a. Its key is registered as hospital-liar, so its gate's refusal of a changed app and its results of
    the release are filed under hospital-liar, and hospital-a's stay hospital-a's. It is revoked afterwards."""
    liar, victim = "hospital-liar", deployment.sites[0]
    kit_dir, _ = deployment.add_site(liar, deployment.sites[1])
    for name in (KIT_FILE, SITE_FILE):
        path = kit_dir / name
        path.write_text(path.read_text().replace(f'site-name = "{liar}"', f'site-name = "{victim}"'))
    assert read_site_kit(kit_dir).site_name == victim
    site = deployment.start_site(liar, kit_dir)
    try:
        wait_for_line(site, "connected to the coordinator as node")
        runs = read_coordinator_kit(deployment.coordinator_kit).runs
        everyone = sorted([*deployment.sites, liar])

        fab = changed_app_fab(tmp_path, tmp_path / "changed-app-ran")
        code, output = run_command(
            deployment, "liar-refused", "--rounds", "1", "--preset", "tiny", "--fab", str(fab)
        )
        assert code == ExitCode.REFUSED, output[-4000:]
        refusals = read_refusals(max(runs.iterdir()))
        assert sorted({r["site"] for r in refusals}) == everyone
        assert len({(r["node_id"], r["site"]) for r in refusals}) == len(everyone)  # one name per node

        code, output = run_command(
            deployment, "liar-release", "--rounds", "1", "--preset", "tiny", "--run-config", "local-epochs=1"
        )
        assert code == 0, output[-4000:]
        run_dir = max(runs.iterdir())
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert sorted((r["round"], r["site"]) for r in records) == [
            (rnd, s) for rnd in (0, 1) for s in everyone
        ]
        server_log = (run_dir / "logs" / "flwr-run.log").read_text()
        assert f"says it is '{victim}' but its key is registered as '{liar}'" in " ".join(server_log.split())
    finally:
        revoked = run_oncofed(
            "coordinator", "revoke", "--kit", str(deployment.coordinator_kit), "--site", liar
        )
        site.stop()
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr


def test_superlink_listens_on_loopback_only(deployment):
    """Checked from the processes' own sockets: the SuperLink (and everything it started) listens on 127.0.0.1
    only; the public port belongs to nginx."""
    kit = read_coordinator_kit(deployment.coordinator_kit)
    tree = [pid for pid, _ in process_tree(deployment.coordinator.pid)]
    superlink = [pid for pid in tree if "flower-superlink" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(superlink) == 1
    superlink_sockets = {a for pid, _ in process_tree(superlink[0]) for a in listening_addresses(pid)}
    assert ("127.0.0.1", kit.superlink_port) in superlink_sockets
    assert {address for address, _ in superlink_sockets} == {"127.0.0.1"}
    assert all(port != kit.port for _, port in superlink_sockets)
    nginx = [pid for pid in tree if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"nginx: master")]
    assert ("127.0.0.1", kit.port) in listening_addresses(nginx[0])


def test_members_cannot_reach_the_control_api(deployment, tmp_path):
    """With a site kit's CA and the public address, `flwr ls`, `flwr run` and raw Control/Runtime API requests
    are refused, while the same `flwr ls` on the coordinator host over loopback works."""
    site_kit = deployment.kits / "sites" / deployment.sites[0]
    member_home = tmp_path / "member-flwr-home"
    member_home.mkdir()
    write_connection(member_home, "public", f"localhost:{deployment.port}", site_kit / "certs" / "ca.crt")
    env = flower_env(member_home)
    flwr = str(Path(sys.executable).parent / "flwr")
    listing = subprocess.run(
        [flwr, "ls", "public"], env=env, capture_output=True, text=True, check=False, timeout=120
    )
    assert listing.returncode != 0, listing.stdout
    release = (
        tmp_path / "release-app"
    )  # even the federation's own release: the Control API is closed to members
    unpack_for_submission(read_coordinator_kit(deployment.coordinator_kit).release, release)
    submission = subprocess.run(
        [flwr, "run", str(release), "public"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    assert submission.returncode != 0 and "Successfully started run" not in submission.stdout
    public_key = deployment.keys[deployment.sites[0]].public
    registration = subprocess.run(
        [flwr, "supernode", "register", str(public_key), "public"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert registration.returncode != 0
    access_log = (deployment.coordinator_kit / "logs" / "proxy-access.log").read_text()
    for path in ("/v1/control/list-runs", "/v1/control/start-run", "/v1/control/register-node"):
        assert f'"POST {path} HTTP/1.1" 403' in access_log, path

    context = ssl.create_default_context(cafile=str(site_kit / "certs" / "ca.crt"))
    for method, path in [
        ("POST", "/v1/control/list-runs"),
        ("POST", "/v1/control/start-run"),
        ("POST", "/v1/runtime/acquire-task"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("POST", "/v1/fleet/%2e%2e/control/list-runs"),
        ("POST", "/v1/fleet/pull-messages/../../control/list-runs"),
        ("GET", "/v1/fleet/pull-messages"),
    ]:
        request = urllib.request.Request(
            f"https://localhost:{deployment.port}{path}",
            data=b"" if method == "POST" else None,
            method=method,
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10, context=context)
        assert refused.value.code == 403, (method, path)
    with urllib.request.urlopen(
        f"https://localhost:{deployment.port}/health", timeout=10, context=context
    ) as ok:
        assert ok.status == 200

    kit = read_coordinator_kit(deployment.coordinator_kit)
    local = subprocess.run(
        [flwr, "ls", "oncofed"],
        env=flower_env(kit.flwr_home),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert local.returncode == 0, local.stdout + local.stderr


def test_proxy_passes_weight_sized_bodies(deployment):
    """A 12 MiB Fleet request (over two of Flower's 5 MiB array chunks) reaches the SuperLink, which reads and
    answers it itself (a JSON error: the bytes are no valid signed protobuf); only bodies above the proxy's limit
    are refused by nginx (413)."""
    context = ssl.create_default_context(cafile=str(deployment.coordinator_kit / "certs" / "ca.crt"))

    def post(size: int) -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"https://localhost:{deployment.port}/v1/fleet/push-object",
            data=b"\0" * size,
            method="POST",
            headers={"Content-Type": "application/protobuf"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60, context=context) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    status, body = post(12 * 1024 * 1024)
    assert status in (400, 401) and "detail" in json.loads(body), body[:300]  # Flower's answer, not nginx's
    status, body = post(80 * 1024 * 1024)
    assert status == 413 and b"nginx" in body


def test_no_private_key_of_a_site_at_the_coordinator(deployment):
    """The provisioning output (kits and the CA folder) holds private keys of the CA and the SuperLink only:
    no file there is a site's private key, and no site kit holds any private key."""
    registered = {
        site: certs.load_site_public_key(deployment.coordinator_kit / "site-keys" / f"{site}.pub")
        for site in deployment.sites
    }
    found = private_key_files(deployment.kits) + private_key_files(deployment.root / "ca-offline")
    assert {p.relative_to(deployment.root) for p in found} == {
        Path("kits/coordinator/certs/server.key"),
        Path("ca-offline/ca.key"),
    }
    for path in found:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert key.public_key() not in registered.values(), path
    for site in deployment.sites:
        assert private_key_files(deployment.kits / "sites" / site) == []
        assert registered[site] == certs.load_site_private_key(deployment.keys[site].private).public_key()
    assert not any(path.name == "ca.key" for path in deployment.kits.rglob("*"))


def test_coordinator_status_names_every_site_and_the_run(deployment):
    """`oncofed coordinator status`: sites by name (Flower itself lists node ids only) and the run's state."""
    result = run_oncofed(
        "coordinator",
        "status",
        "--kit",
        str(deployment.coordinator_kit),
        timeout=180,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    table = " ".join(result.stdout.replace("│", " ").replace("┃", " ").split())
    for site in deployment.sites:
        assert f"{site} online now" in table, result.stdout
    run_dir = min((deployment.coordinator_kit / "runs").iterdir())  # the first run: 2 rounds of training
    assert f"{run_dir.name} completed 2/2" in table, result.stdout


@pytest.mark.slow
def test_a_run_is_continued_from_its_checkpoint(deployment):
    """`oncofed run --resume RUN_DIR --rounds 3`: a new Flower run continues the completed 2-round run with round
    3 only, in the same folder; every round appears once per site."""
    run_dir = min((deployment.coordinator_kit / "runs").iterdir())  # the first run: 2 rounds of training
    code, output = run_command(deployment, "resume-run", "--resume", str(run_dir), "--rounds", "3")
    assert code == 0, output[-4000:]
    assert "Resuming 3 rounds" in output and "[ROUND 3/3]" in output and "[ROUND 2/3]" not in output
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sorted((r["round"], r["site"]) for r in records) == [
        (rnd, site) for rnd in range(4) for site in deployment.sites
    ]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resumed"][0]["after_round"] == 2
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


def test_registering_the_sites_again_is_fine(deployment):
    """`coordinator start` after a restart finds the keys registered in its database: not an error."""
    kit = read_coordinator_kit(deployment.coordinator_kit)
    registrations = register_sites(kit)
    assert [(r.site, r.outcome) for r in registrations] == [
        (site, "already registered") for site in deployment.sites
    ]


def test_site_check_passes_on_a_connected_site(deployment):
    results = check_kit(deployment.kits / "sites" / deployment.sites[0])
    assert [r.problem for r in results if r.status == "error"] == [], results
    assert any(r.check == "coordinator" and r.status == "ok" for r in results)
    (key,) = [r for r in results if r.check == "site key"]
    assert "the kit's key" in key.message and "registered" not in key.message


README_SUBSTITUTIONS = """The README's key step and its three commands run as written, with these substitutions
only: the install root (/opt/oncofed, which a test must not take over) becomes a temporary folder, so install.sh
gets `--prefix DIR --no-user --systemd-dir DIR/systemd` (no user is created: the test runs as itself, and `sudo -u
oncofed` goes); `site setup` gets `--data` (no terminal to ask on); `systemctl enable --now oncofed-site` (no
systemd here) becomes the ExecStart line of the unit install.sh wrote. install.sh runs with the network cut off
(`unshare -n`): the kit was provisioned with --wheelhouse. Before install.sh the kit's runtime-port is set to a
free port (several sites share this host)."""


@pytest.mark.slow
def test_readme_three_commands_connect_a_site(deployment, tmp_path):
    """A hospital makes its key pair with the README's key step, the coordinator adds it with --wheelhouse while
    running, and hospital IT runs the three commands on the first lines of the kit's README: the site connects
    without the coordinator restarting. The test counts the commands it ran."""
    home = tmp_path / "opt-oncofed"
    data = deployment.data / deployment.sites[0]
    readme_of_any_kit = (deployment.kits / "sites" / deployment.sites[0] / "README.md").read_text()
    (key_step,) = [
        part for part in readme_of_any_kit.split("`") if "ssh-keygen" in part and "install -d" in part
    ]
    made = subprocess.run(
        ["sh", "-c", key_step.replace("/opt/oncofed", str(home))], capture_output=True, text=True, check=False
    )
    assert made.returncode == 0, made.stderr
    result = run_oncofed(
        "provision",
        str(deployment.root / "spec.toml"),
        "--out",
        str(deployment.kits),
        "--add-site",
        "hospital-readme",
        "--public-key",
        str(home / "keys" / "site.key.pub"),
        "--wheelhouse",
        timeout=900,
    )
    assert "hospital-readme: registered on the running coordinator" in result.stdout, (
        result.stdout + result.stderr
    )
    kit_dir = deployment.kits / "sites" / "hospital-readme"
    site_toml = kit_dir / SITE_FILE
    site_toml.write_text(
        re.sub(r"(?m)^runtime-port = .*$", f"runtime-port = {free_port()}", site_toml.read_text())
    )

    readme = (kit_dir / "README.md").read_text()
    first_lines = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert readme.index("```bash") < readme.index("\n## ")  # the commands come before any section
    env = clean_env()
    ran = 0
    for line in first_lines:
        words = shlex.split(line.replace("/opt/oncofed", str(home)))
        if words == ["./install.sh"]:
            command = [*OFFLINE, "sh", str(kit_dir / "install.sh"), "--prefix", str(home), "--no-user"]
            done = subprocess.run(
                [*command, "--systemd-dir", str(home / "systemd")],
                cwd=kit_dir,
                env=env,
                capture_output=True,
                text=True,
                timeout=1500,
                check=False,
            )
            assert done.returncode == 0 and "offline, from" in done.stdout, done.stderr + done.stdout
        elif words[:3] == ["sudo", "-u", "oncofed"] and words[4:6] == ["site", "setup"]:
            setup = subprocess.run(
                [*words[3:], "--data", str(data)],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert setup.returncode == 0, setup.stdout + setup.stderr
            assert "cases found:" in setup.stdout and " usable" in setup.stdout
            assert "The site is ready" in setup.stdout
        elif words == ["systemctl", "enable", "--now", "oncofed-site"]:
            unit = (home / "systemd" / "oncofed-site.service").read_text()
            (exec_start,) = [
                row.removeprefix("ExecStart=") for row in unit.splitlines() if row.startswith("ExecStart=")
            ]
            deployment.flwr_homes.append(home / "work" / "flower-home")
            site = start_process(
                "site (the unit's ExecStart)", shlex.split(exec_start), env, tmp_path / "site.out"
            )
            deployment.started.append(site)
            wait_for_line(site, "connected to the coordinator as node", timeout_s=240)
        else:
            pytest.fail(f"the README's first commands hold a line this test does not know: {line!r}")
        ran += 1
    assert ran == 3
    assert deployment.coordinator.popen.poll() is None  # no coordinator restart was needed


def test_revoked_site_is_refused_within_a_heartbeat(deployment):
    """`coordinator revoke` on the running coordinator: the connected site is refused at its next heartbeat and
    its `site start` exits saying so; started again, it is refused at once. The other sites stay connected."""
    kit_dir, _ = deployment.add_site("hospital-revoked", deployment.sites[1])
    site = deployment.start_site("hospital-revoked", kit_dir)
    wait_for_line(site, "connected to the coordinator as node")

    revoked_at = time.monotonic()
    result = run_oncofed(
        "coordinator", "revoke", "--kit", str(deployment.coordinator_kit), "--site", "hospital-revoked"
    )
    assert result.returncode == 0 and "Unregistered node" in result.stdout, result.stdout + result.stderr
    assert site.popen.wait(timeout=HEARTBEAT_WINDOW_S + 30) == ExitCode.REFUSED
    assert time.monotonic() - revoked_at < HEARTBEAT_WINDOW_S + 30
    assert "stopped accepting this site" in site.log_path.read_text()

    again = run_oncofed("site", "start", "--kit", str(kit_dir), timeout=180)
    assert again.returncode == ExitCode.REFUSED
    assert "refused this site's key" in again.stderr
    assert "hospital-revoked" in (deployment.coordinator_kit / "revoked-sites.toml").read_text()
    for other in deployment.started[1 : 1 + len(deployment.sites)]:
        assert other.popen.poll() is None


STOP_BOUND_S = 20.0
"""The most a first Ctrl-C may take to stop a site, on a loaded machine."""


def test_ctrl_c_stops_a_site_which_signs_off(deployment):
    """`site start` stops on the first Ctrl-C within the bound, says so and exits OK, leaving no process; having
    signed off, it connects again at once (a site that did not is refused for a heartbeat window). A second
    Ctrl-C stops it at once: here its Flower processes are frozen (SIGSTOP) first, so that the stop is still
    waiting on them when the second press comes, whatever the machine's speed."""
    kit_dir, _ = deployment.add_site("hospital-stopped", deployment.sites[0])
    home = deployment.flwr_homes[-1]
    for attempt, presses in (("first", 1), ("again", 2)):
        site = start_oncofed(
            f"site start {attempt}",
            deployment.root / "logs" / f"hospital-stopped-{attempt}.out",
            "site",
            "start",
            "--kit",
            str(kit_dir),
        )
        deployment.started.append(site)
        wait_for_line(site, "connected to the coordinator as node")
        if presses == 2:  # a SuperNode that hangs on stop: what an operator's second Ctrl-C is for
            for pid in processes_with_env("FLWR_HOME", str(home.resolve())):
                if pid != site.popen.pid:
                    os.kill(pid, signal.SIGSTOP)
        clock = time.monotonic()
        for _ in range(presses):
            site.popen.send_signal(signal.SIGINT)
            wait_for_line(site, "press Ctrl-C again to stop at once", timeout_s=10)
        assert site.popen.wait(timeout=STOP_BOUND_S) == ExitCode.OK
        assert time.monotonic() - clock < STOP_BOUND_S
        output = site.log_path.read_text()
        assert "Site stopped." in output and "within Flower's heartbeat window" not in output
        assert ("stopping at once" in output) == (presses == 2)
        assert processes_with_env("FLWR_HOME", str(home.resolve())) == []
    revoked = run_oncofed(
        "coordinator", "revoke", "--kit", str(deployment.coordinator_kit), "--site", "hospital-stopped"
    )
    assert revoked.returncode == 0, revoked.stderr  # the later tests' quorum counts only their own sites


def test_wrong_ca_fails_with_a_clear_message(deployment, tmp_path):
    """A kit whose CA is not the coordinator's: the pre-flight names it before Flower starts, and a SuperNode
    started anyway is refused by TLS, with the same explanation."""
    site = deployment.sites[0]
    kit_dir = tmp_path / "kit"
    shutil.copytree(deployment.kits / "sites" / site, kit_dir)
    fill_site_toml(kit_dir, deployment.data / site, tmp_path / "work", deployment.keys[site].private)
    _, other_ca = certs.make_ca("another-federation")
    (kit_dir / "certs" / "ca.crt").write_bytes(certs.certificate_pem(other_ca))

    result = run_oncofed("site", "start", "--kit", str(kit_dir), timeout=120)
    assert result.returncode == ExitCode.BAD_INPUT
    assert (
        "not signed by this kit's CA" in result.stderr and str(kit_dir / "certs" / "ca.crt") in result.stderr
    )

    kit = read_site_kit(kit_dir)
    with ProcessGroup() as processes:
        running = start_site(kit, processes)
        with pytest.raises(SiteStartError, match="not signed by this kit's CA"):
            wait_until_connected(kit, running, timeout_s=60)
    assert processes_with_env("FLWR_HOME", str(kit.flwr_home.resolve())) == []


def test_plain_http_gets_no_service(deployment):
    """The public port speaks only TLS: plain HTTP gets no service; the same over TLS does."""
    for path, data in (("/health", None), ("/v1/fleet/create-node", b"")):
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
            urllib.request.urlopen(f"http://127.0.0.1:{deployment.port}{path}", data=data, timeout=10)
    context = ssl.create_default_context(cafile=str(deployment.coordinator_kit / "certs" / "ca.crt"))
    with urllib.request.urlopen(
        f"https://127.0.0.1:{deployment.port}/health", timeout=10, context=context
    ) as answer:
        assert answer.status == 200


def test_run_settings_are_checked_before_submitting(tmp_path, monkeypatch):
    write_spec(tmp_path / "spec.toml", "settings", ["site-1", "site-2"], free_port())
    provision(read_spec(tmp_path / "spec.toml"), tmp_path / "kits", generate_site_keys=True)
    kit = read_coordinator_kit(tmp_path / "kits" / "coordinator")

    def no_source_tree():
        raise FileNotFoundError("installed from a wheel: no source tree")

    monkeypatch.setattr("deploy.flower_env.app_directory", no_source_tree)  # `oncofed run` needs only the kit
    plan = plan_run(kit, 3, "tiny")
    assert plan.run_config["min-sites"] == 2 and plan.app.sha256 == kit.release_sha256
    assert unpack_for_submission(plan.fab, tmp_path / "submitted").sha256 == kit.release_sha256
    plan = plan_run(kit, 3, "tiny", "local-epochs=1 min-sites=1")
    assert plan.run_config["local-epochs"] == 1 and plan.run_config["min-sites"] == 1
    assert plan.run_config["num-server-rounds"] == 3 and plan.run_dir.parent == kit.runs
    with pytest.raises(ValueError, match="unknown key 'epochs'"):
        plan_run(kit, 3, "tiny", "epochs=1")
    with pytest.raises(ValueError, match="run-dir"):
        plan_run(kit, 3, "tiny", 'run-dir="/tmp/x"')
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        plan_run(kit, 3, "huge")
    with pytest.raises(ValueError, match="not a Flower app bundle"):
        plan_run(kit, 3, "tiny", fab=tmp_path / "spec.toml")
    with pytest.raises(CoordinatorNotRunning, match="oncofed coordinator start --kit"):
        check_coordinator_running(kit)


@pytest.mark.slow
def test_changed_app_runs_once_both_sites_approve(deployment, tmp_path):
    """The whole approval cycle: the changed app is refused at both sites; each site reviews and approves it with
    `oncofed site approve`; the same FAB then trains at both sites, and its changed line ran there."""
    marker = tmp_path / "changed-app-ran"
    fab = changed_app_fab(tmp_path, marker)
    code, output = run_command(
        deployment,
        "before-approval",
        "--rounds",
        "1",
        "--preset",
        "tiny",
        "--fab",
        str(fab),
        "--run-config",
        "min-sites=2",
    )
    assert code == ExitCode.REFUSED and not marker.exists(), output[-3000:]

    for site in deployment.sites:
        declined = run_oncofed(
            "site", "approve", "--kit", str(deployment.kits / "sites" / site), "--fab", str(fab), stdin="n\n"
        )
        assert declined.returncode == ExitCode.REFUSED
        approved = run_oncofed(
            "site", "approve", "--kit", str(deployment.kits / "sites" / site), "--fab", str(fab), "--yes"
        )
        assert approved.returncode == 0 and sha256_hex(fab.read_bytes()) in approved.stdout, approved.stderr

    code, output = (
        run_command(  # the `small` model: one of its arrays (1.7 MiB) is over nginx's default 1 MiB
            deployment,
            "after-approval",
            "--rounds",
            "1",
            "--preset",
            "small",
            "--fab",
            str(fab),
            "--run-config",
            "local-epochs=1 min-sites=2 patch-size=32 samples-per-case=1",
        )
    )
    assert code == 0, output[-4000:]
    assert marker.exists()
    run_dir = max(read_coordinator_kit(deployment.coordinator_kit).runs.iterdir())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["site"] for r in records} == set(deployment.sites) and read_refusals(run_dir) == []
    uploads = [  # authenticated weight uploads through the proxy, larger than nginx's default body limit
        line
        for line in (deployment.coordinator_kit / "logs" / "proxy-access.log").read_text().splitlines()
        if '"POST /v1/fleet/push-object HTTP/1.1" 200' in line
        and int(line.split("request_bytes=")[1].split()[0]) > 2**20
    ]
    assert len(uploads) >= len(deployment.sites)


@pytest.mark.slow
def test_restarts_and_revocation_across_coordinator_restarts(tmp_path):
    """A site killed without signing off and started again within Flower's heartbeat window is told so and
    connects after the window; a revoked site stays refused after the coordinator restarts, also with a fresh
    database."""
    write_federation(tmp_path / "data", n_sites=1, seed=3, preset="tiny")
    (site,) = [folder.name for folder in (tmp_path / "data").iterdir()]
    keys = make_site_keys(tmp_path / "hospital-keys", [site])
    write_spec(tmp_path / "spec.toml", "restarts", [site], free_port(), {site: keys[site].public})
    kits = tmp_path / "kits"
    assert run_oncofed("provision", str(tmp_path / "spec.toml"), "--out", str(kits)).returncode == 0
    shutil.rmtree(tmp_path / "kits" / "ca")  # not needed at run time
    kit_dir = kits / "sites" / site
    fill_site_toml(kit_dir, tmp_path / "data" / site, tmp_path / "work", keys[site].private)
    homes = [kits / "coordinator" / "flwr-home", tmp_path / "work" / "flower-home"]

    def start(name: str, *args: str) -> StartedProcess:
        process = start_oncofed(name, tmp_path / f"{name}.out", *args)
        started.append(process)
        return process

    started: list[StartedProcess] = []
    try:
        coordinator = start("coordinator", "coordinator", "start", "--kit", str(kits / "coordinator"))
        wait_for_line(coordinator, "submit a run")
        first = start("site-1", "site", "start", "--kit", str(kit_dir))
        wait_for_line(first, "connected to the coordinator as node")
        for pid, _ in reversed(process_tree(first.pid)):  # a power cut: nobody signs off
            os.kill(pid, 9)
        first.popen.wait(timeout=10)

        second = start("site-2", "site", "start", "--kit", str(kit_dir))
        wait_for_line(second, "restart within Flower's heartbeat window", timeout_s=120)
        wait_for_line(second, "connected to the coordinator as node", timeout_s=HEARTBEAT_WINDOW_S + 120)

        revoke = run_oncofed("coordinator", "revoke", "--kit", str(kits / "coordinator"), "--site", site)
        assert revoke.returncode == 0, revoke.stderr
        assert second.popen.wait(timeout=HEARTBEAT_WINDOW_S + 30) == ExitCode.REFUSED

        for fresh_database in (False, True):
            coordinator.popen.terminate()
            assert coordinator.popen.wait(timeout=60) == 0
            if fresh_database:
                shutil.rmtree(kits / "coordinator" / "state")
            coordinator = start(
                f"coordinator-{fresh_database}", "coordinator", "start", "--kit", str(kits / "coordinator")
            )
            wait_for_line(coordinator, "submit a run")
            refused = run_oncofed("site", "start", "--kit", str(kit_dir), timeout=180)
            assert refused.returncode == ExitCode.REFUSED and "refused this site's key" in refused.stderr, (
                refused.stderr
            )
    finally:
        orphans = stop_all(started, homes)
    assert orphans == []


@pytest.mark.slow
def test_trusted_entities_refuse_locally_built_apps(tmp_path):
    """Why the sites approve apps by hash themselves: Flower 1.42 verifies signatures only for apps the SuperLink
    fetched from Flower Hub, so a SuperNode given `--trusted-entities` refuses every app submitted from a local
    folder. A tripwire: when this fails, Flower can verify local apps and sites could also require signed ones."""
    write_federation(tmp_path / "data", n_sites=1, seed=2, preset="tiny")
    (site,) = [folder.name for folder in (tmp_path / "data").iterdir()]
    write_spec(tmp_path / "spec.toml", "trusted", [site], free_port())
    provision(read_spec(tmp_path / "spec.toml"), tmp_path / "kits", generate_site_keys=True)
    fill_site_toml(tmp_path / "kits" / "sites" / site, tmp_path / "data" / site, tmp_path / "work", None)
    kit = read_site_kit(tmp_path / "kits" / "sites" / site)
    publisher = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    (tmp_path / "trusted.yaml").write_text(f"fpk_oncofed: '{publisher.decode()}'\n")

    started: list[StartedProcess] = []
    try:
        coordinator = start_oncofed(
            "coordinator start",
            tmp_path / "coordinator.out",
            "coordinator",
            "start",
            "--kit",
            str(tmp_path / "kits" / "coordinator"),
        )
        started.append(coordinator)
        wait_for_line(coordinator, "submit a run")
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
                "--port",
                str(kit.settings.runtime_port),
                "--trusted-entities",
                str(tmp_path / "trusted.yaml"),
            ],
            flower_env(kit.flwr_home),
            tmp_path / "sn.log",
        )
        started.append(supernode)
        runner = start_oncofed(
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
