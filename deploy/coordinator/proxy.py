"""The coordinator's public face: nginx, started from the kit's configuration (deploy/kits/proxy_config.py), terminates
TLS on the public port and passes only what SuperNodes need."""

import shutil
import ssl
import subprocess

from deploy.kits.contents import CoordinatorKit
from deploy.kits.proxy_config import CONFIG_NAME, write_proxy_config
from deploy.processes import ProcessGroup, StartedProcess, wait_for_health

NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")


class ProxyError(RuntimeError):
    """nginx is missing, its configuration is refused, or it did not come up; the message says what to do."""


def nginx_executable() -> str:
    for candidate in NGINX_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise ProxyError(
        "nginx is not installed: the coordinator's public port is served by nginx (Debian/Ubuntu: "
        "`apt-get install nginx-light`); `oncofed coordinator start` runs it itself, no system service needed"
    )


def _nginx_command(kit: CoordinatorKit, *extra: str) -> list[str]:
    return [
        nginx_executable(),
        "-p",
        str(kit.proxy_folder / "run"),
        "-c",
        str(kit.proxy_folder / CONFIG_NAME),
        "-e",
        str(kit.logs / "proxy-error.log"),
        *extra,
    ]


def start_proxy(kit: CoordinatorKit, env: dict[str, str], processes: ProcessGroup) -> StartedProcess:
    """Write the config, have nginx check it, start nginx in the foreground (in `processes`, which stops it) and wait
    until /health answers through it (which also proves the TLS hop to the SuperLink)."""
    write_proxy_config(kit)
    (kit.proxy_folder / "run").mkdir(parents=True, exist_ok=True)
    kit.logs.mkdir(parents=True, exist_ok=True)
    check = subprocess.run(
        _nginx_command(kit, "-t", "-q"), capture_output=True, text=True, timeout=30, check=False
    )
    if check.returncode != 0:
        raise ProxyError(
            f"nginx refused {kit.proxy_folder / CONFIG_NAME}:\n{(check.stderr or check.stdout).strip()[-2000:]}"
        )
    proxy = processes.start("nginx", _nginx_command(kit), env, kit.logs / "proxy.out")
    wait_for_health(
        proxy,
        f"https://{kit.public_local_address}/health",
        timeout_s=30,
        context=ssl.create_default_context(cafile=str(kit.ca_certificate)),
    )
    return proxy
