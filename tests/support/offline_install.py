"""Installing a site kit the way a hospital without internet access would: in a network namespace of its own
(`unshare -n`: only a loopback interface, down, so every connection out of it fails), with no pip configuration
and no code from this checkout on the path."""

import os
import socket
import subprocess
import threading
from pathlib import Path

OFFLINE = ["unshare", "-n"]
"""Prefix for a command that must run with the network cut off (the tests run as root)."""
INSTALL_TIMEOUT_S = 1500
"""A full kit (about 535 MB of wheels, torch included) on a loaded 2-core machine."""


def clean_env() -> dict[str, str]:
    """This environment without pip's settings (its indexes, find-links, constraints) and without PYTHONPATH:
    the installed environment must stand on what the kit brought."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def run_offline(command: list[str], cwd: Path | None = None, timeout: float = INSTALL_TIMEOUT_S):
    return subprocess.run(
        [*OFFLINE, *command],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def connects(offline: bool) -> bool:
    """Whether a TCP connection to a listener on this host's loopback succeeds, from inside a cut-off namespace
    or from the normal one: the control that shows what `unshare -n` takes away."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        accepted = threading.Thread(target=lambda: server.accept()[0].close(), daemon=True)
        accepted.start()
        probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5).close()"
        result = subprocess.run(
            [*(OFFLINE if offline else []), "python3", "-c", probe],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:  # nothing came: unblock the accepting thread
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        accepted.join(timeout=5)
        return result.returncode == 0
