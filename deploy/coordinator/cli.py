"""The coordinator's commands: `oncofed provision`, `oncofed coordinator start|status|revoke`, `oncofed run`.

`coordinator start` runs in the foreground (what systemd and Docker expect): Ctrl-C or SIGTERM stops the
Flower processes it started, with their children, and exits OK. Provisioning (cryptography), the launchers and
Flower load when a command runs, never when `oncofed` starts.
"""

from pathlib import Path
from typing import Annotated

import click
import typer

from models.shared.exit_codes import ExitCode, fail

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
        typer.Argument(
            help="Federation spec (TOML): federation, sites (each with the public-key file its hospital sent), "
            "[coordinator] addresses, port (the public one, nginx's) and superlink-port (127.0.0.1 only)."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Output folder: `coordinator/` and `sites/<site>/`. Re-run with the same "
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
    """Create the federation's CA, the coordinator kit (with the release app) and one kit per site.

    Site kits hold no private key: each hospital makes its pair with `oncofed site keygen` and sends the
    `.pub`. A site added while the coordinator runs is registered at once (no restart).
    """
    from rich.console import Console

    from deploy.coordinator.console import added_sites, print_provision_report
    from deploy.kits.contents import KitError
    from deploy.kits.federation_spec import SpecError, read_spec
    from deploy.kits.provision import provision as provision_kits
    from deploy.kits.release_fab import FabError

    try:
        report = provision_kits(
            read_spec(spec), out, ca, added_sites(add_site, public_key), generate_site_keys
        )
    except (SpecError, KitError, FabError) as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    except RuntimeError as error:  # building the oncofed wheel for the kits failed
        raise fail(str(error), ExitCode.FAILED) from None
    print_provision_report(Console(highlight=False, soft_wrap=True), report, out)


@coordinator.command("start", no_args_is_help=True)
def coordinator_start(kit: CoordinatorKitOption) -> None:
    """Run the SuperLink on 127.0.0.1 behind nginx on the public port, and register the sites' keys.

    TLS, SuperNode authentication and a persistent database in the kit's `state/`; sites reach only the
    Fleet API through nginx; revoked sites are not registered. Needs the CA certificate, never its key. In the
    foreground until Ctrl-C or SIGTERM.
    """
    import time

    from rich.console import Console
    from rich.text import Text

    from deploy.coordinator.console import print_running_coordinator
    from deploy.coordinator.start import certificate_warnings, start_coordinator
    from deploy.kits.contents import KitError, read_coordinator_kit
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
            running = start_coordinator(coordinator)
        except KitError as error:  # a broken revoked-sites.toml
            raise fail(str(error), ExitCode.BAD_INPUT) from None
        except (RuntimeError, TimeoutError) as error:
            raise fail(str(error), ExitCode.FAILED) from None
        except KeyboardInterrupt:
            raise fail("interrupted while starting; nothing is left running", ExitCode.INTERRUPTED) from None
        try:
            print_running_coordinator(console, coordinator, running)
            while running.superlink.popen.poll() is None and running.proxy.popen.poll() is None:
                time.sleep(0.5)
            stopped = running.superlink if running.superlink.popen.poll() is not None else running.proxy
            raise fail(
                f"{stopped.name} exited with code {stopped.popen.returncode}; see {stopped.log_path}:\n"
                f"{tail(stopped.log_path)}",
                ExitCode.FAILED,
            )
        except KeyboardInterrupt:
            console.print("Stopping the coordinator.")
        finally:
            running.stop()


@coordinator.command("status", no_args_is_help=True)
def coordinator_status(kit: CoordinatorKitOption) -> None:
    """List the federation's sites and runs.

    Every site by name (online, offline, last seen, revoked: `flwr supernode list` shows node ids only) and every
    run folder with its state and last completed round; a run whose coordinator died shows as interrupted.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from deploy.coordinator.run_submission import CoordinatorNotRunning
    from deploy.coordinator.status import RUN_STYLE, SITE_STYLE, flower_runs, run_states, site_states
    from deploy.kits.contents import KitError, read_coordinator_kit

    try:
        coordinator = read_coordinator_kit(kit)
    except KitError as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    try:
        sites, flower = site_states(coordinator), flower_runs(coordinator)
    except CoordinatorNotRunning as error:
        raise fail(str(error), ExitCode.FAILED) from None

    console = Console(highlight=False)
    table = Table(
        "site", "status", "last seen", "node", title=f"Sites of federation {coordinator.federation!r}"
    )
    for site in sites:
        table.add_row(
            site.site,
            Text(site.status, SITE_STYLE.get(site.status, "")),
            site.last_seen,
            "" if site.node_id is None else str(site.node_id),
        )
    console.print(table)
    runs = run_states(coordinator, flower)
    table = Table("run folder", "state", "round", "Flower run", "note", title=f"Runs in {coordinator.runs}")
    for run_state in runs:
        flower_run = (
            f"{run_state.flower_run_id} ({run_state.flower_status})"
            if run_state.flower_run_id
            else run_state.flower_status
        )
        table.add_row(
            run_state.folder.name,
            Text(run_state.state, RUN_STYLE.get(run_state.state, "")),
            run_state.round,
            flower_run,
            Text(run_state.note),
        )
    console.print(table if runs else "No runs yet.")


@app.command("run", no_args_is_help=True)
def run(
    kit: CoordinatorKitOption,
    rounds: Annotated[
        int | None, typer.Option(help="Federated rounds (default 5; with --resume: the run's own, or more).")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="Model preset: tiny | small | large. Default: small; with --resume, the run's own."
        ),
    ] = None,
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
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue this run folder after its last completed round (its coordinator died, or it stopped "
            "without quorum), with its own settings.",
        ),
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option(
            "--init", help="Start from a global model an earlier run saved (`RUN_DIR/models/*.pt`)."
        ),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            help="MLflow tracking server for the run's records (run setting tracking-uri; default: an MLflow "
            "store in the run folder, or the resumed run's own).",
        ),
    ] = None,
) -> None:
    """Submit the kit's release app (or --fab) to the coordinator and stream its log.

    Runs on the coordinator host (the SuperLink's control port is on 127.0.0.1 only). Results go to the kit's
    `runs/<time>/`; the log shows a participation line per round (who took part, who is missing and why).
    Ctrl-C stops following, the run goes on at the coordinator. The quorum (`min-sites`) defaults to a majority
    of the kit's sites. Exit 5 (refused) when every site refused the app.
    """
    from rich.console import Console

    from deploy.coordinator.console import print_refusals
    from deploy.coordinator.run_submission import (
        CoordinatorNotRunning,
        plan_resume,
        plan_run,
        run_id_in,
        submit_run,
    )
    from deploy.coordinator.status import still_running
    from deploy.kits.contents import CONNECTION, KitError, read_coordinator_kit
    from deploy.kits.release_fab import FabError
    from deploy.processes import sigterm_as_interrupt
    from server_app.report.site_table import evaluations, site_table
    from server_app.run_record.run_folder import (
        COMPLETED,
        RUNNING,
        SUMMARY_FILE,
        read_json,
        read_metrics,
        read_refusals,
        stop_explanation,
    )

    if resume is not None and (preset is not None or init is not None):
        raise click.UsageError("--resume continues a run with its own model: leave out --preset and --init")
    try:
        coordinator = read_coordinator_kit(kit)
        if resume is not None:
            plan = plan_resume(coordinator, resume, rounds, run_config, fab)
        else:
            plan = plan_run(
                coordinator, 5 if rounds is None else rounds, preset or "small", run_config, init, fab
            )
    except (KitError, ValueError) as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    if tracking_uri is not None:
        plan.run_config["tracking-uri"] = tracking_uri
    if resume is not None and (run_id := still_running(coordinator, plan.run_dir)) is not None:
        raise fail(
            f"--resume {plan.run_dir}: Flower run {run_id} is still writing into it. If its coordinator died, "
            "Flower marks it failed about a minute after the restart; to stop it now: "
            f"FLWR_HOME={coordinator.flwr_home} flwr stop {run_id} {CONNECTION}",
            ExitCode.BAD_INPUT,
        )
    console = Console(highlight=False, soft_wrap=True)
    log_path = plan.run_dir / "logs" / "flwr-run.log"
    config = plan.run_config
    console.print(
        f"{'Resuming' if resume else 'Submitting'} {plan.fab.name} (sha256 {plan.app.sha256}): "
        f"{config['num-server-rounds']} rounds ({config.get('model-preset', 'saved')} model, quorum "
        f"{config['min-sites']} of {len(coordinator.sites)} sites) to "
        f"{coordinator.local_address}; run folder {plan.run_dir}\n  log: {log_path}; Ctrl-C stops "
        "following (the run goes on at the coordinator)",
        markup=False,
    )
    with sigterm_as_interrupt():
        try:
            code = submit_run(plan, lambda line: console.print(line, markup=False))
        except (CoordinatorNotRunning, FabError) as error:
            raise fail(str(error), ExitCode.FAILED) from None
        except KeyboardInterrupt:
            run_id = run_id_in(log_path)
            raise fail(
                "stopped following the run; it goes on at the coordinator. Stop it with: "
                f"FLWR_HOME={coordinator.flwr_home} flwr stop {run_id or 'RUN_ID'} {CONNECTION}",
                ExitCode.INTERRUPTED,
            ) from None
    records = read_metrics(plan.run_dir)
    refused = print_refusals(
        Console(stderr=True, highlight=False, soft_wrap=True), read_refusals(plan.run_dir)
    )
    if refused and not evaluations(records):
        raise fail(
            f"no site runs this app (sha256 {plan.app.sha256}): every site refused it. Each site must approve "
            "it first (`oncofed site approve --kit DIR --fab FILE`)",
            ExitCode.REFUSED,
        )
    summary = read_json(plan.run_dir / SUMMARY_FILE)
    resume_hint = f"continue it with `oncofed run --kit {kit} --resume {plan.run_dir}`"
    if (stop := stop_explanation(summary)) is not None:
        what, after = stop
        hint = "submit the run again when the sites are online" if after is None else resume_hint
        raise fail(f"{what}\n  run folder: {plan.run_dir} ({hint})", ExitCode.FAILED)
    if summary.get("status") == RUNNING:
        done = summary.get("last_round")
        raise fail(
            f"the run did not end: the coordinator or the connection to it stopped (flwr run exit code {code}; "
            f"last completed round: {'none' if done is None else done}). When `oncofed coordinator status --kit "
            f"{kit}` shows the run interrupted, {resume_hint}",
            ExitCode.FAILED,
        )
    if code != 0 or summary.get("status") != COMPLETED or not evaluations(records):
        outcome = f"flwr run exit code {code}" if code != 0 else "no site sent results"
        raise fail(
            f"the run did not finish ({outcome}); logs: {log_path}, "
            f"{coordinator.logs / 'superlink.log'}, and each site's <work-path>/logs/",
            ExitCode.FAILED,
        )
    console.print(site_table(records))
    console.print(f"Results: {plan.run_dir} (metrics.jsonl, summary.json, models/)", markup=False)


@coordinator.command("revoke", no_args_is_help=True)
def coordinator_revoke(
    kit: Annotated[Path, typer.Option("--kit", help="The coordinator kit.")],
    site: Annotated[str, typer.Option("--site", help="The site to revoke.")],
    reason: Annotated[str, typer.Option(help="Why (kept in revoked-sites.toml).")] = "",
) -> None:
    """Unregister a site's key from the running SuperLink and never register it again."""
    from rich.console import Console

    from deploy.coordinator.revocation import mark_revoked
    from deploy.coordinator.site_registry import RegistryError, coordinator_answers, site_registry
    from deploy.kits.contents import KitError, read_coordinator_kit

    console = Console(highlight=False, soft_wrap=True)
    try:
        coordinator = read_coordinator_kit(kit)
        revocation = mark_revoked(coordinator, site, reason)
    except KitError as error:
        raise fail(str(error), ExitCode.BAD_INPUT) from None
    console.print(
        f"Site {site} (key {revocation.fingerprint}) is revoked in {coordinator.revoked_file}: no start registers it.",
        markup=False,
    )
    if not coordinator_answers(coordinator):
        console.print("The coordinator is not running: its next start unregisters the key.")
        return
    try:
        with site_registry(coordinator) as registry:
            nodes = registry.unregister(site)
    except RegistryError as error:
        raise fail(f"{error}; the next `oncofed coordinator start` unregisters it", ExitCode.FAILED) from None
    if nodes:
        console.print(
            f"Unregistered node {', '.join(map(str, nodes))} on the running coordinator: the site is refused at its "
            "next request (within Flower's heartbeat window)."
        )
    else:
        console.print("Its key was not registered on the running coordinator.")
