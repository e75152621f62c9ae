"""Start the coordinator from its kit: a TLS SuperLink that admits only registered SuperNodes.

`flower-superlink` runs with the kit's certificate, `--enable-supernode-auth`, a persistent database in the
kit's state folder and runtime dependency installation off; then every site key in the kit is registered with
`flwr supernode register` (a key registered at an earlier start is fine: node ids stay tied to their keys).
"""

import json
import ssl
import subprocess
from dataclasses import dataclass
from typing import Literal

from flwr.supercore.error import ApiErrorCode

from deploy import certificates as certs
from deploy.flower_env import flower_env, flower_executable, write_connection
from deploy.kit import CONNECTION, CoordinatorKit, KitError
from deploy.processes import StartedProcess, start_process, wait_for_health

ALREADY_REGISTERED = f"[code: {int(ApiErrorCode.PUBLIC_KEY_ALREADY_IN_USE)}]"


@dataclass(frozen=True)
class Registration:
    site: str
    outcome: Literal["registered", "already registered"]


def certificate_warnings(kit: CoordinatorKit) -> list[str]:
    """Refuse certificates that cannot work (expired, not from the kit's CA); warn when one expires soon."""
    ca = certs.load_certificate(kit.ca_certificate)
    server = certs.load_certificate(kit.server_certificate)
    if not certs.is_signed_by(server, ca):
        raise KitError(
            f"{kit.server_certificate} is not signed by {kit.ca_certificate}; re-run `oncofed provision` "
            "with the same spec and output folder to re-issue it"
        )
    warnings = []
    for path, certificate in ((kit.ca_certificate, ca), (kit.server_certificate, server)):
        days = certs.days_left(certificate)
        until = certificate.not_valid_after_utc.date().isoformat()
        if days < 0:
            raise KitError(
                f"{path} expired on {until}; re-run `oncofed provision` with the same spec and output "
                "folder to renew the server certificate (an expired CA needs a new federation)"
            )
        if days < certs.EXPIRY_WARNING_DAYS:
            warnings.append(
                f"{path} expires on {until}, in {days:.0f} days: re-run `oncofed provision` to renew it"
            )
    return warnings


def coordinator_env(kit: CoordinatorKit) -> dict[str, str]:
    """Flower's environment for this kit, with the `flwr` connection pointing at the kit's current location."""
    env = flower_env(kit.flwr_home)
    write_connection(kit.flwr_home, CONNECTION, kit.local_address, kit.ca_certificate)
    return env


def start_superlink(kit: CoordinatorKit, env: dict[str, str]) -> StartedProcess:
    """Start the SuperLink and wait until it answers /health over TLS."""
    kit.database.parent.mkdir(parents=True, exist_ok=True)
    superlink = start_process(
        "flower-superlink",
        [
            flower_executable("flower-superlink"),
            "--ssl-ca-certfile",
            str(kit.ca_certificate),
            "--ssl-certfile",
            str(kit.server_certificate),
            "--ssl-keyfile",
            str(kit.server_key),
            "--enable-supernode-auth",
            "--database",
            str(kit.database),
            "--host",
            kit.bind_host,
            "--port",
            str(kit.port),
            "--disable-runtime-dependency-installation",
        ],
        env,
        kit.logs / "superlink.log",
    )
    try:
        wait_for_health(
            superlink,
            f"https://{kit.local_address}/health",
            context=ssl.create_default_context(cafile=str(kit.ca_certificate)),
        )
    except BaseException:
        superlink.stop()
        raise
    return superlink


def register_sites(kit: CoordinatorKit, env: dict[str, str]) -> list[Registration]:
    """Register every site's public key; raise RuntimeError naming the site and Flower's answer on failure."""
    registrations = []
    for site in kit.sites:
        result = subprocess.run(
            [
                flower_executable("flwr"),
                "supernode",
                "register",
                str(kit.site_public_key(site)),
                CONNECTION,
                "--name",
                site,
                "--format",
                "json",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        try:
            answer = json.loads(result.stdout)
        except json.JSONDecodeError:
            answer = {"success": False, "error-message": (result.stdout + result.stderr).strip()[-1000:]}
        if answer.get("success"):
            registrations.append(Registration(site, "registered"))
        elif ALREADY_REGISTERED in str(answer.get("error-message", "")):
            registrations.append(Registration(site, "already registered"))
        else:
            raise RuntimeError(
                f"registering site {site!r} ({kit.site_public_key(site)}) failed: "
                f"{answer.get('error-message')}"
            )
    return registrations


def start_coordinator(kit: CoordinatorKit) -> tuple[StartedProcess, list[Registration]]:
    """The running SuperLink with every site registered; nothing is left running if a step fails."""
    env = coordinator_env(kit)
    superlink = start_superlink(kit, env)
    try:
        return superlink, register_sites(kit, env)
    except BaseException:
        superlink.stop()
        raise
