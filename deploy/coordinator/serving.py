"""`oncofed coordinator start`: the coordinator in the foreground, what systemd and Docker expect.

It runs until Ctrl-C or SIGTERM, which stop the SuperLink and nginx with every process they started and end the
command OK (how a service is stopped), or until one of the two exits on its own, which is a failure.
"""

import time
from pathlib import Path

from rich.text import Text

from deploy.coordinator.console import print_running_coordinator
from deploy.coordinator.start import RunningCoordinator, certificate_warnings, start_coordinator
from deploy.kits.contents import KitError, read_coordinator_kit
from deploy.processes import ProcessGroup, StartedProcess, stop_on_signals, tail
from models.shared.exit_codes import CommandError, ExitCode, errors_as
from models.shared.terminal import make_console


def serve_coordinator(kit_dir: Path) -> None:
    """Start the coordinator from its kit, say what runs where, and keep it running until Ctrl-C or SIGTERM."""
    console = make_console(highlight=False, soft_wrap=True)
    with errors_as(ExitCode.BAD_INPUT, KitError):
        kit = read_coordinator_kit(kit_dir)
        warnings = certificate_warnings(kit)
    errors = make_console(stderr=True, highlight=False, soft_wrap=True)
    for warning in warnings:
        errors.print(Text.assemble(("warning:", "yellow"), " ", warning))
    try:
        with stop_on_signals("the coordinator (SuperLink and nginx)"), ProcessGroup() as processes:
            with (
                errors_as(ExitCode.BAD_INPUT, KitError),
                errors_as(ExitCode.FAILED, RuntimeError, TimeoutError),
            ):
                running = start_coordinator(kit, processes)  # KitError: a broken revoked-sites.toml
            print_running_coordinator(console, kit, running)
            stopped = wait_for_exit(running)
            raise CommandError(
                f"{stopped.name} exited with code {stopped.popen.returncode}; see {stopped.log_path}:\n"
                f"{tail(stopped.log_path)}",
                ExitCode.FAILED,
            )
    except KeyboardInterrupt:
        console.print("Coordinator stopped.")


def wait_for_exit(running: RunningCoordinator) -> StartedProcess:
    """Block until the SuperLink or nginx exits; returns the one that did."""
    while (stopped := running.exited()) is None:
        time.sleep(0.5)
    return stopped
