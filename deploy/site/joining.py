"""`oncofed site start`: the site in the foreground, what systemd and Docker expect.

The kit is checked first (a coordinator not reachable yet is not fatal: the SuperNode keeps trying). Then the
SuperNode and the gate run until Ctrl-C or SIGTERM, which stop both with every process they started and end the
command OK (how a service is stopped), or until either exits on its own: REFUSED when the coordinator does not
accept the site's key, FAILED otherwise.
"""

import os
from pathlib import Path

from rich.console import Console
from rich.text import Text

from deploy.kits.contents import SiteKit, read_site_kit
from deploy.processes import ProcessGroup, stop_on_signals
from deploy.site.launcher import SiteStartError, connect, record_session, wait_for_exit
from deploy.site.link import LinkWatch
from deploy.site.preflight import check_kit
from models.shared.exit_codes import CommandError, ExitCode
from models.shared.terminal import make_console

NOT_FATAL_AT_START = {"connection-refused", "timeout", "name-unresolved", "unreachable"}
"""Coordinator not reachable yet: the SuperNode keeps trying, so `site start` goes on."""
REFUSED_PROBLEMS = {"key-refused", "unregistered"}


def join_federation(kit_dir: Path) -> None:
    """Check the kit, connect the site and keep it connected until Ctrl-C or SIGTERM."""
    console = make_console(highlight=False, soft_wrap=True)
    site = checked_kit(kit_dir)
    console.print(
        f"Site {site.site_name!r} (federation {site.federation!r}) connecting to {site.settings.coordinator}\n"
        f"  logs: {site.logs / 'supernode.log'} (Flower), {site.logs / 'gate.log'} (apps run or refused), "
        f"{site.logs / 'site.log'} (training, validation)\n"
        f"  runs only apps approved in {site.allow_list} (`oncofed site apps --kit {site.root}`)\n"
        f"  stop: Ctrl-C, or kill {os.getpid()} (systemd: systemctl stop oncofed-site)",
        markup=False,
    )
    try:
        with stop_on_signals("the site (SuperNode and gate)"):
            run_site(site, console)
    except KeyboardInterrupt:
        console.print("Site stopped.")
    except SiteStartError as error:
        code = ExitCode.REFUSED if error.problem in REFUSED_PROBLEMS else ExitCode.FAILED
        raise CommandError(f"site stopped: {error}", code) from None


def checked_kit(kit_dir: Path) -> SiteKit:
    """The site kit, once its pre-flight found nothing fatal (each finding that is not ok is said on stderr)."""
    results = check_kit(kit_dir)
    errors = make_console(stderr=True, highlight=False, soft_wrap=True)
    for result in results:
        if result.status != "ok":
            errors.print(Text.assemble((f"{result.check}:", "yellow"), " ", result.message))
    fatal = [r for r in results if r.status == "error" and r.problem not in NOT_FATAL_AT_START]
    if fatal:
        raise CommandError(f"site not started: {fatal[0].message}", ExitCode.BAD_INPUT)
    return read_site_kit(kit_dir)


def run_site(site: SiteKit, console: Console) -> None:
    """Connect and follow the SuperNode's log (saying when the coordinator is lost and when it answers again)
    until it or the gate exits: raises SiteStartError saying why. The session is recorded as stopped once both
    are, so that the next start knows this one signed off."""
    running = None
    try:
        with ProcessGroup() as processes:
            running, node_id = connect(site, processes, lambda line: console.print(line, markup=False))
            if node_id is None:
                console.print("  still connecting; Flower keeps trying (see the log)")
            else:
                console.print(f"  connected to the coordinator as node {node_id}")
            watch = LinkWatch(
                site.settings.coordinator, lambda text: console.print(f"  {text}", markup=False)
            )
            raise wait_for_exit(site, running, connected=node_id is not None, on_line=watch.line)
    finally:
        if running is not None:
            record_session(site, "stopped")
