"""`oncofed provision`: the federation's CA, the coordinator kit and one kit per site, from the spec and the sites'
public keys; a bad spec, key or kit is BAD_INPUT, a wheel that could not be built or fetched FAILED."""

from pathlib import Path

from deploy.coordinator.console import added_sites, print_provision_report
from deploy.kits.contents import KitError
from deploy.kits.federation_spec import SpecError, read_spec
from deploy.kits.provision import provision
from deploy.kits.release_fab import FabError
from deploy.kits.wheelhouse import WheelSource, default_wheel_cache
from models.shared.exit_codes import ExitCode, errors_as
from models.shared.terminal import make_console


def provision_federation(
    spec: Path,
    out: Path,
    ca: Path | None,
    add_site: list[str] | None,
    public_key: list[Path] | None,
    generate_site_keys: bool,
    wheelhouse: bool = False,
    wheel_cache: Path | None = None,
) -> None:
    """Write (or add to) the kits in `out` and say what was made and kept; sites added while the coordinator runs
    are registered there at once. New site kits get the hashed lock (and with `wheelhouse` the wheels) from
    `wheel_cache` (default: the user's cache)."""
    wheels = WheelSource(wheel_cache or default_wheel_cache(), wheelhouse)
    with (
        errors_as(ExitCode.FAILED, RuntimeError),
        errors_as(ExitCode.BAD_INPUT, SpecError, KitError, FabError),
    ):
        report = provision(
            read_spec(spec), out, ca, added_sites(add_site, public_key), generate_site_keys, wheels
        )
    print_provision_report(make_console(highlight=False, soft_wrap=True), report, out)
