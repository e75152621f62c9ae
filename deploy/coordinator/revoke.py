"""`oncofed coordinator revoke`: shut a site out for good, on the running coordinator at once and at every start."""

from pathlib import Path

from deploy.coordinator.revocation import mark_revoked
from deploy.coordinator.site_registry import RegistryError, coordinator_answers, site_registry
from deploy.kits.contents import KitError, read_coordinator_kit
from models.shared.exit_codes import CommandError, ExitCode, errors_as
from models.shared.terminal import make_console


def revoke_site(kit_dir: Path, site: str, reason: str) -> None:
    """Record the site as revoked in the kit (no start registers it again), then unregister its key on the running
    SuperLink, if one runs: the site is refused at its next request."""
    console = make_console(highlight=False, soft_wrap=True)
    with errors_as(ExitCode.BAD_INPUT, KitError):
        kit = read_coordinator_kit(kit_dir)
        revocation = mark_revoked(kit, site, reason)
    console.print(
        f"Site {site} (key {revocation.fingerprint}) is revoked in {kit.revoked_file}: no start registers it.",
        markup=False,
    )
    if not coordinator_answers(kit):
        console.print("The coordinator is not running: its next start unregisters the key.")
        return
    try:
        with site_registry(kit) as registry:
            nodes = registry.unregister(site)
    except RegistryError as error:
        raise CommandError(
            f"{error}; the next `oncofed coordinator start` unregisters it", ExitCode.FAILED
        ) from None
    if nodes:
        console.print(
            f"Unregistered node {', '.join(map(str, nodes))} on the running coordinator: the site is refused at its "
            "next request (within Flower's heartbeat window)."
        )
    else:
        console.print("Its key was not registered on the running coordinator.")
