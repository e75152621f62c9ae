"""Start the coordinator from its kit: a TLS SuperLink on 127.0.0.1 that admits only registered SuperNodes,
behind the proxy (deploy/coordinator/proxy.py) that is the only thing sites reach.

`flower-superlink` runs with the kit's certificate, `--enable-supernode-auth`, a persistent database in the
kit's state folder and runtime dependency installation off, bound to 127.0.0.1; then nginx starts on the public
port, every site key in the kit except the revoked ones is registered (a key registered at an earlier start is
fine: node ids stay tied to their keys), and a revoked key still registered is unregistered. Only the CA's
certificate is needed, never its key.
"""

import datetime as dt
import ssl
from dataclasses import dataclass

from deploy.coordinator.proxy import start_proxy
from deploy.coordinator.revocation import active_sites, read_revocations
from deploy.coordinator.site_registry import Registration, site_registry
from deploy.flower_env import flower_env, flower_executable, write_connection
from deploy.kits import certificates as certs
from deploy.kits.contents import CONNECTION, CoordinatorKit, KitError
from deploy.processes import ProcessGroup, StartedProcess, wait_for_health
from models.shared.atomic import atomic_write_text


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


def start_superlink(kit: CoordinatorKit, env: dict[str, str], processes: ProcessGroup) -> StartedProcess:
    """Start the SuperLink (in `processes`, which stops it) and wait until it answers /health over TLS."""
    kit.database.parent.mkdir(parents=True, exist_ok=True)
    superlink = processes.start(
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
            "127.0.0.1",
            "--port",
            str(kit.superlink_port),
            "--disable-runtime-dependency-installation",
        ],
        env,
        kit.logs / "superlink.log",
    )
    started = dt.datetime.now(dt.UTC)
    wait_for_health(
        superlink,
        f"https://{kit.local_address}/health",
        context=ssl.create_default_context(cafile=str(kit.ca_certificate)),
    )
    atomic_write_text(kit.superlink_started, started.isoformat())  # deploy/coordinator/status.py reads it
    return superlink


def register_sites(kit: CoordinatorKit) -> list[Registration]:
    """Register every site that is not revoked; raise RegistryError naming the site and Flower's answer."""
    with site_registry(kit) as registry:
        return [registry.register(site) for site in active_sites(kit)]


def unregister_revoked(kit: CoordinatorKit) -> list[str]:
    """Unregister revoked sites whose key is still registered (revoked while the coordinator was stopped)."""
    with site_registry(kit) as registry:
        return [site for site in read_revocations(kit) if registry.unregister(site)]


@dataclass
class RunningCoordinator:
    superlink: StartedProcess
    proxy: StartedProcess
    registrations: list[Registration]
    unregistered: list[str]
    """Revoked sites found registered and unregistered at this start."""

    def exited(self) -> StartedProcess | None:
        """The SuperLink or nginx if it exited (the coordinator cannot work without either)."""
        return next((p for p in (self.superlink, self.proxy) if p.popen.poll() is not None), None)


def start_coordinator(kit: CoordinatorKit, processes: ProcessGroup) -> RunningCoordinator:
    """The running SuperLink and proxy, started in `processes` (which stops them, also when a step fails), with
    every active site registered."""
    env = coordinator_env(kit)
    superlink = start_superlink(kit, env, processes)
    proxy = start_proxy(kit, env, processes)
    unregistered = unregister_revoked(kit)
    return RunningCoordinator(superlink, proxy, register_sites(kit), unregistered)
