"""Start a site from its kit: a `flower-supernode` that connects out to the coordinator over TLS with the site's key.

The node config (models.wire.NodeConfig: site-name, data-path, work-path, the site's disclosure settings and
its limits on run settings, from site.toml) goes to
Flower as a TOML file, so paths with spaces or quotes need no shell quoting. Flower's own state, logs and
config live in the site's work folder; nothing is written into the kit or the data folder.
"""

import re
import time
from pathlib import Path

from deploy.flower_env import flower_env, toml_value
from deploy.kit import SiteKit
from deploy.processes import StartedProcess, start_process, tail
from deploy.simulate import flower_executable
from models.atomic import atomic_write_bytes

CONNECTED = re.compile(r"SuperNode ID: (\d+)")
CONNECT_WAIT_S = 60.0


class SiteStartError(RuntimeError):
    """The SuperNode stopped; the message says why in terms of the kit, and where the log is."""


def write_node_config(kit: SiteKit) -> Path:
    """The node config file the ClientApp's `context.node_config` is read from."""
    path = kit.flwr_home / "node-config.toml"
    values = kit.settings.node_config()
    atomic_write_bytes(
        path, "".join(f"{key} = {toml_value(value)}\n" for key, value in values.items()).encode()
    )
    return path


def start_supernode(kit: SiteKit) -> tuple[StartedProcess, int]:
    """Start the SuperNode; returns it and the log offset its output starts at."""
    env = flower_env(kit.flwr_home)
    log_path = kit.logs / "supernode.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    command = [
        flower_executable("flower-supernode"),
        "--root-certificates",
        str(kit.ca_certificate),
        "--superlink",
        kit.settings.coordinator,
        "--auth-supernode-private-key",
        str(kit.private_key),
        "--node-config",
        str(write_node_config(kit)),
        "--host",
        "127.0.0.1",
        "--port",
        str(kit.settings.runtime_port),
    ]
    return start_process("flower-supernode", command, env, log_path), offset


def wait_until_connected(
    kit: SiteKit, supernode: StartedProcess, offset: int, timeout_s: float = CONNECT_WAIT_S
) -> int | None:
    """The node id once the coordinator accepted the site; None if still trying after `timeout_s`.

    Raises SiteStartError when the SuperNode exits, explaining the refusal.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = _read_from(supernode.log_path, offset)
        if match := CONNECTED.search(text):
            return int(match.group(1))
        if supernode.popen.poll() is not None:
            raise SiteStartError(explain_exit(kit, supernode, offset))
        time.sleep(0.3)
    return None


def explain_exit(kit: SiteKit, supernode: StartedProcess, offset: int) -> str:
    """Why the SuperNode stopped (its log from `offset` on), in terms the site's admin can act on."""
    log_text = _read_from(supernode.log_path, offset)
    code = supernode.popen.returncode
    where = f"(flower-supernode exit code {code}; log: {supernode.log_path})"
    coordinator = kit.settings.coordinator
    if "Failed to activate SuperNode" in log_text or "must be registered" in log_text:
        return (
            f"the coordinator at {coordinator} refused this site's key {kit.key_fingerprint}: it is not "
            "registered there. Ask the coordinator's operator to register site "
            f"{kit.site_name!r} (restart `oncofed coordinator start` after provisioning it) {where}"
        )
    if "certificate has expired" in log_text:
        return f"the coordinator's certificate at {coordinator} has expired; the coordinator must renew it {where}"
    if "Hostname mismatch" in log_text or "IP address mismatch" in log_text:
        return (
            f"the coordinator's certificate is not valid for the address {coordinator} in site.toml; run "
            f"`oncofed site check --kit {kit.root}` to see the names it is valid for {where}"
        )
    if "CERTIFICATE_VERIFY_FAILED" in log_text:
        return (
            f"the coordinator at {coordinator} presented a certificate not signed by this kit's CA "
            f"({kit.ca_certificate}); ask the coordinator for the current kit {where}"
        )
    return f"flower-supernode stopped {where}:\n{tail(supernode.log_path)}"


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as log:
            log.seek(offset)
            return log.read()
    except OSError:
        return ""
