"""Commands for a real deployment: `oncofed provision`, `coordinator start`, `site start`, `site check`, `run`.

`coordinator start` and `site start` run in the foreground (what systemd and Docker expect): Ctrl-C or SIGTERM
stops the Flower processes they started, with their children.
"""

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from deploy.coordinator import certificate_warnings, start_coordinator
from deploy.deployment_report import added_sites, print_provision_report, print_running_coordinator
from deploy.kit import CONNECTION, SITE_FILE, KitError, read_coordinator_kit, read_site_kit
from deploy.preflight import CheckResult, check_kit
from deploy.processes import sigterm_as_interrupt, tail
from deploy.provision import SpecError, provision, read_spec
from deploy.release_fab import FabError
from deploy.site_launcher import SiteStartError, connect, record_session, wait_for_exit
from models.exit_codes import ExitCode
from site_app.check_command import OutputFormat
from site_app.check_command import site_check as check_data

console = Console()
errors = Console(stderr=True)

KitOption = Annotated[Path, typer.Option("--kit", help="The kit folder `oncofed provision` wrote.")]
NOT_FATAL_AT_START = {"connection-refused", "timeout", "name-unresolved", "unreachable"}
"""Coordinator not reachable yet: the SuperNode keeps trying, so `site start` goes on."""


def fail(message: str, code: int = 2) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def provision_command(
    spec: Annotated[
        Path,
        typer.Argument(help="Federation spec (TOML): federation, sites, [coordinator] addresses and port."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Output folder: coordinator/ and sites/<site>/. Re-run with the same "
            "folder to add sites; existing kits are not changed."
        ),
    ],
    ca: Annotated[
        Path | None,
        typer.Option(
            help="The CA's folder (ca.key, ca.crt; created on first use, default OUT/ca). Keep it offline: "
            "only issuing or renewing the SuperLink certificate needs it."
        ),
    ] = None,
    add_site: Annotated[
        list[str] | None,
        typer.Option("--add-site", help="Add a site (with --public-key, once per site), besides the spec's."),
    ] = None,
    public_key: Annotated[
        list[Path] | None,
        typer.Option("--public-key", help="The public key file (.pub) the --add-site hospital sent."),
    ] = None,
    generate_site_keys: Annotated[
        bool,
        typer.Option(
            "--generate-site-keys",
            help="TEST FEDERATIONS ONLY: generate the private key of each new site without a public key and put "
            "it in its kit (the coordinator then holds it: never with real data).",
        ),
    ] = False,
) -> None:
    """Create the federation's CA, the coordinator kit and one kit per site (from the sites' public keys)."""
    try:
        report = provision(read_spec(spec), out, ca, added_sites(add_site, public_key), generate_site_keys)
    except (SpecError, KitError, FabError, RuntimeError) as error:
        raise fail(str(error)) from None
    print_provision_report(console, report, out)


def coordinator_start(kit: KitOption) -> None:
    """Start the coordinator's SuperLink (TLS, SuperNode authentication) and register the sites' keys."""
    try:
        coordinator = read_coordinator_kit(kit)
        warnings = certificate_warnings(coordinator)
    except KitError as error:
        raise fail(str(error)) from None
    for warning in warnings:
        errors.print(f"[yellow]warning:[/] {warning}", highlight=False)
    with sigterm_as_interrupt():
        try:
            running = start_coordinator(coordinator)
        except (RuntimeError, TimeoutError, KitError) as error:
            raise fail(str(error), code=1) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        try:
            print_running_coordinator(console, coordinator, running)
            while running.superlink.popen.poll() is None and running.proxy.popen.poll() is None:
                time.sleep(0.5)
            stopped = running.superlink if running.superlink.popen.poll() is not None else running.proxy
            raise fail(
                f"{stopped.name} exited with code {stopped.popen.returncode}; see {stopped.log_path}:\n"
                f"{tail(stopped.log_path)}",
                code=1,
            )
        except KeyboardInterrupt:
            console.print("Stopping the coordinator.")
        finally:
            running.stop()


def site_check(
    kit: Annotated[
        Path | None,
        typer.Option(
            "--kit",
            help="The site kit: checks the kit, the key, the coordinator "
            "over TLS and the Flower version, then the data it names.",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="The site's data folder (only read); default: the kit's data-path."),
    ] = None,
    work: Annotated[
        Path | None,
        typer.Option(
            "--work", help="The site's work folder (inventory.json goes here); default: the kit's work-path."
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="CSV with columns case_id,image,label (paths relative to --data)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="site.toml with [series], [labels], [limits]; default: the kit's site.toml."
        ),
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="text: a table; json: the inventory on stdout.")
    ] = OutputFormat.text,
) -> None:
    """Check a site before it joins: its kit (with --kit), then its data. Exit 0 ok, 1 kit or usage error, 2 no usable case."""
    if kit is not None:
        results = check_kit(kit)
        print_checks(results, errors if output_format is OutputFormat.json else console)
        if any(result.status == "error" for result in results):
            raise typer.Exit(1)
        settings = read_site_kit(kit).settings
        data, work = data or settings.data_path, work or settings.work_path
        config = config or kit / SITE_FILE
    if data is None or work is None:
        raise fail("give --kit, or both --data and --work", code=1)
    check_data(data=data, work=work, manifest=manifest, config=config, output_format=output_format)


def print_checks(results: list[CheckResult], out: Console = console) -> None:
    table = Table("check", "result", "details", show_lines=False)
    style = {"ok": "[green]ok[/]", "warning": "[yellow]warning[/]", "error": "[bold red]error[/]"}
    for result in results:
        table.add_row(result.check, style[result.status], result.message)
    out.print(table)


def site_start(kit: KitOption) -> None:
    """Check the kit, then connect this site to the coordinator (a Flower SuperNode; outbound HTTPS only)."""
    results = check_kit(kit)
    fatal = [r for r in results if r.status == "error" and r.problem not in NOT_FATAL_AT_START]
    for result in results:
        if result.status != "ok":
            errors.print(f"[yellow]{result.check}:[/] {result.message}", highlight=False, soft_wrap=True)
    if fatal:
        raise fail(f"site not started: {fatal[0].message}", code=1)
    site = read_site_kit(kit)
    with sigterm_as_interrupt():
        console.print(
            f"Site {site.site_name!r} (federation {site.federation!r}) connecting to {site.settings.coordinator}\n"
            f"  logs: {site.logs / 'supernode.log'} (Flower), {site.logs / 'gate.log'} (apps run or refused), "
            f"{site.logs / 'site.log'} (training, validation)\n"
            f"  runs only apps approved in {site.allow_list} (`oncofed site apps --kit {site.root}`)\n"
            f"  stop: Ctrl-C, or kill {os.getpid()} (systemd: systemctl stop oncofed-site)",
            highlight=False,
            soft_wrap=True,
        )
        running = None
        try:
            running, node_id = connect(
                site, lambda line: console.print(line, highlight=False, soft_wrap=True)
            )
            if node_id is None:
                console.print("  still connecting; Flower keeps trying (see the log)")
            else:
                console.print(f"  connected to the coordinator as node {node_id}")
            raise wait_for_exit(site, running, connected=node_id is not None)
        except SiteStartError as error:
            code = ExitCode.REFUSED if error.problem in ("key-refused", "unregistered") else ExitCode.FAILED
            raise fail(f"site stopped: {error}", code=code) from None
        except KeyboardInterrupt:
            console.print("Stopping the site.")
        finally:
            if running is not None:
                running.stop()
                record_session(site, "stopped")


def run(
    kit: KitOption,
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
    fab: Annotated[
        Path | None,
        typer.Option(
            "--fab",
            help="Submit this app bundle (a new release, e.g. from `flwr build`) instead of the kit's release; "
            "each site runs it only once it approved it (`oncofed site approve`).",
        ),
    ] = None,
) -> None:
    """Submit the kit's release app (or --fab) to the running coordinator and stream the ServerApp's log."""
    # torch and the server's modules load here only: the other commands start without them
    from deploy.deployment_report import print_refusals
    from deploy.federated_run import CoordinatorNotRunning, plan_run, run_id_in, submit_run
    from server_app.run_folder import SUMMARY_FILE, read_metrics, read_refusals
    from server_app.site_table import site_table

    try:
        coordinator = read_coordinator_kit(kit)
        plan = plan_run(coordinator, rounds, preset, run_config, fab)
    except (KitError, ValueError) as error:
        raise fail(str(error)) from None
    log_path = plan.run_dir / "logs" / "flwr-run.log"
    console.print(
        f"Submitting {plan.fab.name} (sha256 {plan.app.sha256}): {rounds} rounds ({preset} model, "
        f"{plan.run_config['min-sites']} sites) to {coordinator.local_address}; run folder {plan.run_dir}\n"
        f"  log: {log_path}; Ctrl-C stops following (the run goes on at the coordinator)",
        highlight=False,
        soft_wrap=True,
    )
    with sigterm_as_interrupt():
        try:
            code = submit_run(plan, lambda line: console.print(line, highlight=False, markup=False))
        except (CoordinatorNotRunning, FabError) as error:
            raise fail(str(error), code=1) from None
        except KeyboardInterrupt:
            run_id = run_id_in(log_path)
            errors.print(
                f"Stopped following the run; it goes on at the coordinator. Stop it with: "
                f"FLWR_HOME={coordinator.flwr_home} flwr stop {run_id or 'RUN_ID'} {CONNECTION}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(130) from None
    records = read_metrics(plan.run_dir)
    refused = print_refusals(errors, read_refusals(plan.run_dir))
    if refused and not records:
        raise fail(
            f"no site runs this app (sha256 {plan.app.sha256}): every site refused it. Each site must approve "
            "it first (`oncofed site approve --kit DIR --fab FILE`)",
            code=ExitCode.REFUSED,
        )
    if code != 0 or not (plan.run_dir / SUMMARY_FILE).is_file() or not records:
        outcome = f"flwr run exit code {code}" if code != 0 else "no site sent results"
        raise fail(
            f"the run did not finish ({outcome}); logs: {log_path}, "
            f"{coordinator.logs / 'superlink.log'}, and each site's <work-path>/logs/",
            code=1,
        )
    console.print(site_table(records))
    console.print(
        f"Results: {plan.run_dir} (metrics.jsonl, summary.json, models/)", highlight=False, soft_wrap=True
    )
