"""The coordinator's commands: `oncofed provision`, `oncofed coordinator start`, `oncofed run`.

`coordinator start` runs in the foreground (what systemd and Docker expect): Ctrl-C or SIGTERM stops the
Flower processes it started, with their children, and exits OK. Provisioning (cryptography), the launchers and
Flower load when a command runs, never when `oncofed` starts.
"""

import os
from pathlib import Path
from typing import Annotated

import typer

from models.exit_codes import ExitCode, fail

app = typer.Typer()
coordinator = typer.Typer(help="The coordinator (Flower SuperLink), from its kit.", no_args_is_help=True)
app.add_typer(coordinator, name="coordinator")

CoordinatorKitOption = Annotated[
    Path, typer.Option("--kit", help="The coordinator kit folder (`oncofed provision` wrote it).")
]


@app.command("provision", no_args_is_help=True)
def provision(
    spec: Annotated[
        Path,
        typer.Argument(help="Federation spec (TOML): federation, sites, [coordinator] addresses and port."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Output folder: `coordinator/` and `sites/<site>/`. Re-run with the same "
            "folder to add sites; existing kits are not changed."
        ),
    ],
) -> None:
    """Create the federation's CA, the coordinator kit and one kit per site."""
    from rich.console import Console

    from deploy.kit import KitError
    from deploy.provision import SpecError, read_spec
    from deploy.provision import provision as provision_kits

    try:
        report = provision_kits(read_spec(spec), out)
    except (SpecError, KitError) as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    except RuntimeError as error:  # building the oncofed wheel for the kits failed
        raise fail(str(error), ExitCode.FAILED) from None
    console = Console(highlight=False)
    console.print(
        f"Coordinator kit: {report.coordinator} (CA {report.ca}, server certificate "
        f"{report.server_certificate})"
    )
    for site in report.created:
        console.print(f"  new site kit: {out.resolve() / 'sites' / site}")
    for site in report.kept:
        console.print(f"  kept unchanged: {out.resolve() / 'sites' / site}")
    for site in report.not_in_spec:
        console.print(f"  [yellow]not in the spec, kept:[/] {site} (provisioning never removes a site)")
    console.print(
        "Send each site its folder (it holds the site's private key: use a secure channel). "
        f"certs/ca.key stays in {report.coordinator}."
    )
    if report.created and report.kept:
        console.print("Restart the coordinator to register the new sites.")


@coordinator.command("start", no_args_is_help=True)
def coordinator_start(kit: CoordinatorKitOption) -> None:
    """Run the SuperLink and register the sites' keys.

    TLS, SuperNode authentication and a persistent database in the kit's `state/`; in the foreground until
    Ctrl-C or SIGTERM.
    """
    from rich.console import Console
    from rich.text import Text

    from deploy.coordinator import certificate_warnings, start_coordinator
    from deploy.kit import KitError, read_coordinator_kit
    from deploy.processes import sigterm_as_interrupt, tail

    console, errors = Console(highlight=False, soft_wrap=True), Console(stderr=True, highlight=False)
    try:
        coordinator = read_coordinator_kit(kit)
        warnings = certificate_warnings(coordinator)
    except KitError as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    for warning in warnings:
        errors.print(Text.assemble(("warning:", "yellow"), " ", warning))
    with sigterm_as_interrupt():
        try:
            superlink, registrations = start_coordinator(coordinator)
        except (RuntimeError, TimeoutError) as error:
            raise fail(str(error), ExitCode.FAILED) from None
        except KeyboardInterrupt:
            raise fail("interrupted while starting; nothing is left running", ExitCode.INTERRUPTED) from None
        try:
            sites = ", ".join(f"{r.site} ({r.outcome})" for r in registrations)
            console.print(
                f"Coordinator of federation {coordinator.federation!r} running: flower-superlink "
                f"(pid {superlink.pid}) on {coordinator.bind_host}:{coordinator.port}, TLS, SuperNode "
                "authentication\n"
                f"  sites: {sites}\n"
                f"  logs: {superlink.log_path}; database: {coordinator.database}\n"
                f"  submit a run: oncofed run --kit {coordinator.root} --rounds N\n"
                f"  stop: Ctrl-C, or kill {os.getpid()} (systemd: systemctl stop oncofed-coordinator)",
                markup=False,
            )
            code = superlink.popen.wait()
            raise fail(
                f"flower-superlink exited with code {code}; see {superlink.log_path}:\n"
                f"{tail(superlink.log_path)}",
                ExitCode.FAILED,
            )
        except KeyboardInterrupt:
            console.print("Stopping the coordinator.")
        finally:
            superlink.stop()


@app.command("run", no_args_is_help=True)
def run(
    kit: CoordinatorKitOption,
    rounds: Annotated[int, typer.Option(help="Federated rounds.")] = 5,
    preset: Annotated[str, typer.Option(help="Model preset: tiny | small | large.")] = "small",
    run_config: Annotated[
        str,
        typer.Option(
            "--run-config",
            help="More run settings as 'key=value' pairs, e.g. 'local-epochs=1 min-sites=2' "
            "(keys of [tool.flwr.app.config]).",
        ),
    ] = "",
) -> None:
    """Submit a training run to the coordinator and stream its log.

    Results go to the kit's `runs/<time>/`; Ctrl-C stops following, the run goes on at the coordinator.
    """
    from rich.console import Console

    from deploy.federated_run import CoordinatorNotRunning, plan_run, run_id_in, submit_run
    from deploy.kit import CONNECTION, KitError, read_coordinator_kit
    from deploy.processes import sigterm_as_interrupt
    from server_app.run_folder import SUMMARY_FILE, read_metrics
    from server_app.site_table import site_table

    try:
        coordinator = read_coordinator_kit(kit)
        plan = plan_run(coordinator, rounds, preset, run_config)
    except (KitError, ValueError) as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    console = Console(highlight=False, soft_wrap=True)
    log_path = plan.run_dir / "logs" / "flwr-run.log"
    console.print(
        f"Submitting {rounds} rounds ({preset} model, {plan.run_config['min-sites']} sites) to "
        f"{coordinator.local_address}; run folder {plan.run_dir}\n  log: {log_path}; Ctrl-C stops "
        "following (the run goes on at the coordinator)",
        markup=False,
    )
    with sigterm_as_interrupt():
        try:
            code = submit_run(plan, lambda line: console.print(line, markup=False))
        except CoordinatorNotRunning as error:
            raise fail(str(error), ExitCode.FAILED) from None
        except KeyboardInterrupt:
            run_id = run_id_in(log_path)
            raise fail(
                "stopped following the run; it goes on at the coordinator. Stop it with: "
                f"FLWR_HOME={coordinator.flwr_home} flwr stop {run_id or 'RUN_ID'} {CONNECTION}",
                ExitCode.INTERRUPTED,
            ) from None
    records = read_metrics(plan.run_dir)
    if code != 0 or not (plan.run_dir / SUMMARY_FILE).is_file() or not records:
        outcome = f"flwr run exit code {code}" if code != 0 else "no site sent results"
        raise fail(
            f"the run did not finish ({outcome}); logs: {log_path}, "
            f"{coordinator.logs / 'superlink.log'}, and each site's <work-path>/logs/",
            ExitCode.FAILED,
        )
    console.print(site_table(records))
    console.print(f"Results: {plan.run_dir} (metrics.jsonl, summary.json, models/)")
