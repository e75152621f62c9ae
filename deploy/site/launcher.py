"""Start a site from its kit: Flower's SuperNode (`flower-supernode` with the shorter fixed waits of
deploy/site/flower_waits.py, run by deploy/site/supernode_runner.py) that connects out to the coordinator over TLS
with the site's own key, and the site's gate (deploy/site/approval_gate.py), the only process that launches ClientApps, and only
approved ones.

The SuperNode runs with `--isolation process` (it launches nothing itself) and a fresh shared secret
(`--superexec-auth-secret-file`, 0600 in the work folder) that the gate must present to take a task from the
SuperNode's Runtime API on 127.0.0.1. The node config (models.shared.node_config.NodeConfig: site-name, data-path, work-path,
the path of site.toml, the site's disclosure settings and its limits on run settings, from site.toml) goes to
Flower as a TOML file, so paths with spaces or quotes need no shell quoting. Flower's own state, logs and config
live in the site's work folder; nothing is written into the kit or the data folder.
"""

import datetime as dt
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flwr.common.constant import HEARTBEAT_DEFAULT_INTERVAL, HEARTBEAT_PATIENCE

from deploy.flower_env import flower_env, toml_value
from deploy.kits.contents import SiteKit
from deploy.processes import ProcessGroup, StartedProcess, follow_log, tail
from deploy.site.approval_gate import gate_command, gated_supernode_arguments
from deploy.site.supernode_runner import supernode_command
from models.shared.atomic import atomic_write_bytes

CONNECTED = re.compile(r"SuperNode ID: (\d+)")
CONNECT_WAIT_S = 60.0
HEARTBEAT_WINDOW_S = HEARTBEAT_PATIENCE * HEARTBEAT_DEFAULT_INTERVAL
"""How long the SuperLink counts a node as online after its last heartbeat (flwr: online_until = last
heartbeat + HEARTBEAT_PATIENCE × interval). A node that ended without signing off cannot be activated again
before that."""
SESSION_FILE = "session.json"
SECRET_FILE = "superexec.secret"


class SiteStartError(RuntimeError):
    """The SuperNode (or the gate) stopped; the message says why in terms of the kit, and where the log is."""

    def __init__(self, message: str, problem: str = "stopped") -> None:
        super().__init__(message)
        self.problem = problem
        """`key-refused`, `unregistered`, `certificate`, `gate`, `stopped`."""


@dataclass
class RunningSite:
    supernode: StartedProcess
    gate: StartedProcess
    offset: int
    """Where this start's output begins in the SuperNode's log."""

    @property
    def pid(self) -> int:
        return self.supernode.pid


def write_node_config(kit: SiteKit) -> Path:
    """The node config file the ClientApp's `context.node_config` is read from."""
    path = kit.flwr_home / "node-config.toml"
    values = kit.settings.node_config()
    atomic_write_bytes(
        path, "".join(f"{key} = {toml_value(value)}\n" for key, value in values.items()).encode()
    )
    return path


def write_secret(kit: SiteKit) -> Path:
    """A new SuperNode ↔ gate secret for this start (only this user can read it)."""
    path = kit.flwr_home / SECRET_FILE
    atomic_write_bytes(path, secrets.token_bytes(32), 0o600)
    return path


def start_site(kit: SiteKit, processes: ProcessGroup) -> RunningSite:
    """Start the SuperNode and the gate in `processes` (which stops both, also when the gate cannot start)."""
    env = flower_env(kit.flwr_home)
    log_path = kit.logs / "supernode.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    secret = write_secret(kit)
    supernode = processes.start(
        "flower-supernode",
        [
            *supernode_command(),
            "--root-certificates",
            str(kit.ca_certificate),
            "--superlink",
            kit.settings.coordinator,
            "--auth-supernode-private-key",
            str(kit.private_key),
            "--node-config",
            str(write_node_config(kit)),
            *gated_supernode_arguments(secret, kit.settings.runtime_port),
        ],
        env,
        log_path,
    )
    gate = processes.start(
        "oncofed gate",
        gate_command(kit.settings.runtime_port, secret, kit.allow_list, kit.site_name, supernode.pid),
        env,
        kit.logs / "gate.log",
    )
    return RunningSite(supernode=supernode, gate=gate, offset=offset)


def wait_until_connected(kit: SiteKit, site: RunningSite, timeout_s: float = CONNECT_WAIT_S) -> int | None:
    """The node id once the coordinator accepted the site; None if still trying after `timeout_s`.

    Raises SiteStartError when the SuperNode or the gate exits, explaining why.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = _read_from(site.supernode.log_path, site.offset)
        if match := CONNECTED.search(text):
            return int(match.group(1))
        if site.supernode.popen.poll() is not None or site.gate.popen.poll() is not None:
            raise explain_exit(kit, site)
        time.sleep(0.3)
    return None


def explain_exit(kit: SiteKit, site: RunningSite, connected: bool = False) -> SiteStartError:
    """Why the site stopped (the SuperNode's log from this start on), in terms the site's admin can act on.
    `connected`: the coordinator had accepted the site before it stopped."""
    if site.gate.popen.poll() is not None and site.supernode.popen.poll() is None:
        return SiteStartError(
            f"the site's gate (the process that runs approved apps) stopped with code {site.gate.popen.returncode}; "
            f"see {site.gate.log_path}:\n{tail(site.gate.log_path)}",
            "gate",
        )
    supernode = site.supernode
    log_text = _read_from(supernode.log_path, site.offset)
    where = f"(flower-supernode exit code {supernode.popen.returncode}; log: {supernode.log_path})"
    coordinator = kit.settings.coordinator
    if "Failed to activate SuperNode" in log_text or "must be registered" in log_text:
        return SiteStartError(
            f"the coordinator at {coordinator} refused this site's key {kit.key_fingerprint}: it is not registered "
            f"there (not yet added, or revoked). Ask the coordinator's operator to register site {kit.site_name!r} "
            f"with the public key of that fingerprint {where}",
            "key-refused",
        )
    if connected:
        return SiteStartError(
            f"the coordinator at {coordinator} stopped accepting this site: its key {kit.key_fingerprint} is no "
            "longer registered there (the site was revoked, or unregistered by the coordinator's operator) "
            f"{where}",
            "unregistered",
        )
    if "certificate has expired" in log_text:
        return SiteStartError(
            f"the coordinator's certificate at {coordinator} has expired; the coordinator must renew it {where}",
            "certificate",
        )
    if "Hostname mismatch" in log_text or "IP address mismatch" in log_text:
        return SiteStartError(
            f"the coordinator's certificate is not valid for the address {coordinator} in site.toml; run "
            f"`oncofed site check --kit {kit.root}` to see the names it is valid for {where}",
            "certificate",
        )
    if "CERTIFICATE_VERIFY_FAILED" in log_text:
        return SiteStartError(
            f"the coordinator at {coordinator} presented a certificate not signed by this kit's CA "
            f"({kit.ca_certificate}); ask the coordinator for the current kit {where}",
            "certificate",
        )
    return SiteStartError(f"flower-supernode stopped {where}:\n{tail(supernode.log_path)}")


def read_session(kit: SiteKit) -> dict:
    """The previous start's record: {"node-id", "connected-at", "state": "connected" | "stopped", …}, or {}."""
    try:
        return json.loads((kit.flwr_home / SESSION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def record_session(kit: SiteKit, state: str, node_id: int | None = None) -> None:
    session = {**read_session(kit), "state": state, f"{state}-at": dt.datetime.now(dt.UTC).isoformat()}
    if node_id is not None:
        session["node-id"] = node_id
    atomic_write_bytes(kit.flwr_home / SESSION_FILE, json.dumps(session).encode())


def connect(
    kit: SiteKit, processes: ProcessGroup, say: Callable[[str], None], window_s: float = HEARTBEAT_WINDOW_S
) -> tuple[RunningSite, int | None]:
    """Start the site in `processes` and wait until the coordinator accepts it.

    A site whose previous SuperNode ended without signing off (killed, crashed, power cut) is still counted as
    online by the SuperLink until its heartbeat window passes, and Flower refuses to activate it again meanwhile
    with the same answer as for an unknown key. That case is reported as what it is, and the start is retried once
    after the window."""
    previous = read_session(kit)
    site = start_site(kit, processes)
    try:
        node_id = wait_until_connected(kit, site)
    except SiteStartError as error:
        if error.problem != "key-refused" or previous.get("state") != "connected":
            raise
        processes.stop()
        retry_at = dt.datetime.now() + dt.timedelta(seconds=window_s + 5)
        say(
            f"  restart within Flower's heartbeat window: the coordinator still counts this site's previous "
            f"connection (node {previous.get('node-id', '?')}, which ended without signing off) as online for up to "
            f"{window_s:.0f} s after its last heartbeat, and refuses a new one meanwhile. Retrying at "
            f"{retry_at:%H:%M:%S}."
        )
        time.sleep(window_s + 5)
        site = start_site(kit, processes)
        node_id = wait_until_connected(kit, site)
    if node_id is not None:
        record_session(kit, "connected", node_id)
    return site, node_id


def wait_for_exit(
    kit: SiteKit, site: RunningSite, connected: bool, on_line: Callable[[str], None] = lambda line: None
) -> SiteStartError:
    """Block until the SuperNode or the gate exits, handing each new line of the SuperNode's log (from where this
    start's output begins) to `on_line` meanwhile; the reason it stopped, explained."""
    follow_log(site.supernode, on_line, poll_s=0.5, offset=site.offset, companions=[site.gate])
    return explain_exit(kit, site, connected=connected)


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as log:
            log.seek(offset)
            return log.read()
    except OSError:
        return ""
