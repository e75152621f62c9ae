"""What the deployment commands print: provisioning results, the running coordinator, the sites that refused an
app. Kept apart from the command modules so that each command stays a short sequence of calls."""

import os
from pathlib import Path

from rich.console import Console

from deploy.coordinator.site_registry import RegistryError, coordinator_answers, site_registry
from deploy.coordinator.start import RunningCoordinator
from deploy.kits.contents import CoordinatorKit, read_coordinator_kit
from deploy.kits.federation_spec import SpecError
from deploy.kits.provision import ProvisionReport


def added_sites(names: list[str] | None, keys: list[Path] | None) -> dict[str, Path]:
    """`--add-site NAME --public-key FILE`, repeated: paired in order."""
    names, keys = names or [], keys or []
    if len(names) != len(keys):
        raise SpecError(
            f"--add-site was given {len(names)} time(s) and --public-key {len(keys)}: give one public key file "
            "per added site, in the same order"
        )
    return dict(zip(names, keys, strict=True))


def print_provision_report(console: Console, report: ProvisionReport, out: Path) -> None:
    """The kits made and kept; new sites are registered on the coordinator at once when it is running."""
    console.print(
        f"Coordinator kit: {report.coordinator} (server certificate {report.server_certificate}; release app "
        f"{report.release}, sha256 {report.release_sha256})\nCA: {report.ca_folder} ({report.ca}). Keep this "
        "folder offline: only issuing or renewing the SuperLink certificate needs it.",
        highlight=False,
        soft_wrap=True,
    )
    for site in report.created:
        console.print(
            f"  new site kit: {out.resolve() / 'sites' / site}{kit_contents(report, site)}", highlight=False
        )
    for site in report.kept:
        console.print(f"  kept unchanged: {out.resolve() / 'sites' / site}", highlight=False)
    for site in report.not_in_spec:
        console.print(f"  [yellow]not in the spec, kept:[/] {site} (provisioning never removes a site)")
    if report.generated_keys:
        console.print(
            f"  [bold yellow]TEST FEDERATION:[/] the private keys of {', '.join(report.generated_keys)} were "
            "generated here and are in their kits; never use these kits with real data.",
        )
    for site in report.coordinator_made_keys:
        console.print(
            f"  [yellow]note:[/] the kit of {site} holds a key the coordinator made (provisioned before sites made "
            "their own keys): have the site make its own pair, revoke this one and add the site again.",
        )
    console.print(
        "Send each site its folder. The kits hold no private key (unless a test federation), only the CA "
        "certificate and the release app the sites pre-approve.",
        highlight=False,
        soft_wrap=True,
    )
    if report.created and report.kept:
        register_new_sites(console, report.coordinator, report.created)


def kit_contents(report: ProvisionReport, site: str) -> str:
    """` (512.3 MB; 138 wheels, installs offline)`: what a new site kit weighs and how it installs."""
    size = f"{report.kit_bytes.get(site, 0) / 1e6:.1f} MB"
    if report.wheel_count:
        return f" ({size}; {report.wheel_count} wheels, installs offline)"
    if report.locked:
        return f" ({size}; {report.locked} locked packages, installs from an index)"
    return f" ({size})"


def register_new_sites(console: Console, coordinator: Path, sites: list[str]) -> None:
    """Register added sites on the running SuperLink (no restart: a run in progress goes on)."""
    kit = read_coordinator_kit(coordinator)
    if not coordinator_answers(kit):
        console.print("The coordinator is not running: the new sites are registered when it starts.")
        return
    try:
        with site_registry(kit) as registry:
            for site in sites:
                registration = registry.register(site)
                console.print(
                    f"  {site}: {registration.outcome} on the running coordinator (node {registration.node_id})"
                )
    except RegistryError as error:
        console.print(
            f"[bold red]error:[/] {error}; `oncofed coordinator start` registers it at the next start"
        )


def print_running_coordinator(console: Console, kit: CoordinatorKit, running: RunningCoordinator) -> None:
    """What runs where, after `coordinator start`."""
    sites = ", ".join(f"{r.site} ({r.outcome})" for r in running.registrations) or "none"
    lines = [
        f"Coordinator of federation {kit.federation!r} running:",
        (
            f"  public: nginx (pid {running.proxy.pid}) on {kit.bind_host}:{kit.port}, TLS; passes only the Fleet API "
            "(/v1/fleet/*) and /health"
        ),
        (
            f"  flower-superlink (pid {running.superlink.pid}) on 127.0.0.1:{kit.superlink_port} only, TLS, SuperNode "
            "authentication"
        ),
        f"  sites: {sites}",
    ]
    if running.unregistered:
        lines.append(f"  revoked, unregistered now: {', '.join(running.unregistered)}")
    lines += [
        f"  logs: {kit.logs}; database: {kit.database}",
        f"  submit a run (on this host): oncofed run --kit {kit.root} --rounds N",
        f"  stop: Ctrl-C, or kill {os.getpid()} (systemd: systemctl stop oncofed-coordinator)",
    ]
    console.print("\n".join(lines), highlight=False, soft_wrap=True)


def print_refusals(console: Console, refusals: list[dict]) -> set[str]:
    """One line per site that refused the run's app; returns those sites."""
    sites: dict[str, dict] = {}
    for refusal in refusals:
        sites.setdefault(refusal["site"], refusal)
    for site, refusal in sites.items():
        console.print(
            f"[yellow]site {site} refused the app:[/] app not approved by the site (sha256 {refusal['fab_sha256']})",
            highlight=False,
            soft_wrap=True,
        )
    return set(sites)
