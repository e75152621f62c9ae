"""Commands for a real deployment: `oncofed provision`, `coordinator start`, `site start`, `site check`, `run`.

`coordinator start` and `site start` run in the foreground (what systemd and Docker expect): Ctrl-C or SIGTERM
stops the Flower processes they started, with their children.
"""

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from deploy.coordinator import certificate_warnings, start_coordinator
from deploy.coordinator_link import LinkWatch
from deploy.kit import CONNECTION, SITE_FILE, KitError, read_coordinator_kit, read_site_kit
from deploy.preflight import CheckResult, check_kit
from deploy.processes import follow_log, sigterm_as_interrupt, tail
from deploy.provision import SpecError, provision, read_spec
from deploy.site_launcher import SiteStartError, explain_exit, start_supernode, wait_until_connected
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
) -> None:
    """Create the federation's CA, the coordinator kit and one kit per site."""
    try:
        report = provision(read_spec(spec), out)
    except (SpecError, KitError, RuntimeError) as error:
        raise fail(str(error)) from None
    console.print(
        f"Coordinator kit: {report.coordinator} (CA {report.ca}, server certificate "
        f"{report.server_certificate})",
        highlight=False,
    )
    for site in report.created:
        console.print(f"  new site kit: {out.resolve() / 'sites' / site}", highlight=False)
    for site in report.kept:
        console.print(f"  kept unchanged: {out.resolve() / 'sites' / site}", highlight=False)
    for site in report.not_in_spec:
        console.print(f"  [yellow]not in the spec, kept:[/] {site} (provisioning never removes a site)")
    console.print(
        "Send each site its folder (it holds the site's private key: use a secure channel). "
        f"certs/ca.key stays in {report.coordinator}.",
        highlight=False,
    )
    if report.created and report.kept:
        console.print("Restart the coordinator to register the new sites.")


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
            superlink, registrations = start_coordinator(coordinator)
        except (RuntimeError, TimeoutError) as error:
            raise fail(str(error), code=1) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        try:
            sites = ", ".join(f"{r.site} ({r.outcome})" for r in registrations)
            console.print(
                "\n".join(
                    [
                        f"Coordinator of federation {coordinator.federation!r} running: flower-superlink "
                        + f"(pid {superlink.pid}) on {coordinator.bind_host}:{coordinator.port}, TLS, SuperNode authentication",
                        f"  sites: {sites}",
                        f"  logs: {superlink.log_path}; database: {coordinator.database}",
                        f"  submit a run: oncofed run --kit {coordinator.root} --rounds N",
                        f"  stop: Ctrl-C, or kill {os.getpid()} (systemd: systemctl stop oncofed-coordinator)",
                    ]
                ),
                highlight=False,
                soft_wrap=True,
            )
            code = superlink.popen.wait()
            raise fail(
                f"flower-superlink exited with code {code}; see {superlink.log_path}:\n"
                f"{tail(superlink.log_path)}",
                code=1,
            )
        except KeyboardInterrupt:
            console.print("Stopping the coordinator.")
        finally:
            superlink.stop()


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
        supernode, offset = start_supernode(site)
        try:
            console.print(
                f"Site {site.site_name!r} (federation {site.federation!r}): flower-supernode (pid "
                f"{supernode.pid}) connecting to {site.settings.coordinator}\n"
                f"  logs: {supernode.log_path} (Flower), {site.logs / 'site.log'} (training, validation)\n"
                f"  stop: Ctrl-C, or kill {os.getpid()} (systemd: systemctl stop oncofed-site)",
                highlight=False,
                soft_wrap=True,
            )
            node_id = wait_until_connected(site, supernode, offset)
            if node_id is None:
                console.print("  still connecting; Flower keeps trying (see the log)")
            else:
                console.print(f"  connected to the coordinator as node {node_id}")
            watch = LinkWatch(
                site.settings.coordinator, lambda text: console.print(f"  {text}", highlight=False)
            )
            follow_log(supernode, watch.line, poll_s=1.0, offset=offset)
            raise SiteStartError(explain_exit(site, supernode, offset))
        except SiteStartError as error:
            raise fail(f"site stopped: {error}", code=1) from None
        except KeyboardInterrupt:
            console.print("Stopping the site.")
        finally:
            supernode.stop()


def run(
    kit: KitOption,
    rounds: Annotated[
        int | None, typer.Option(help="Federated rounds (default 5; with --resume: the run's own, or more).")
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="Model preset: tiny | small | large (default small).")
    ] = None,
    run_config: Annotated[
        str,
        typer.Option(
            "--run-config",
            help="More run settings as 'key=value' pairs, e.g. 'local-epochs=1 min-sites=2' "
            "(keys of [tool.flwr.app.config]).",
        ),
    ] = "",
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue this run folder after its last completed round (its coordinator died or it "
            "stopped without quorum), with its own settings.",
        ),
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option("--init", help="Start from a global model an earlier run saved (RUN_DIR/models/*.pt)."),
    ] = None,
) -> None:
    """Submit a training run to the running coordinator and stream the ServerApp's log until it ends."""
    # torch and the server's modules load here only: the other commands start without them
    from deploy.coordinator_status import still_running
    from deploy.federated_run import CoordinatorNotRunning, plan_resume, plan_run, run_id_in, submit_run
    from server_app.run_folder import SUMMARY_FILE, read_json, read_metrics
    from server_app.site_table import evaluations, site_table

    try:
        coordinator = read_coordinator_kit(kit)
        if resume is not None:
            if preset is not None or init is not None:
                raise ValueError("--resume continues a run with its own model: leave out --preset and --init")
            plan = plan_resume(coordinator, resume, rounds, run_config)
            if (run_id := still_running(coordinator, plan.run_dir)) is not None:
                raise ValueError(
                    f"--resume {plan.run_dir}: Flower run {run_id} is still writing into it. If its coordinator "
                    "died, Flower marks it failed about a minute after the restart; to stop it now: "
                    f"FLWR_HOME={coordinator.flwr_home} flwr stop {run_id} {CONNECTION}"
                )
        else:
            plan = plan_run(coordinator, 5 if rounds is None else rounds, preset or "small", run_config, init)
    except (KitError, ValueError) as error:
        raise fail(str(error)) from None
    log_path = plan.run_dir / "logs" / "flwr-run.log"
    config = plan.run_config
    console.print(
        f"{'Resuming' if resume else 'Submitting'} {config['num-server-rounds']} rounds ({config['model-preset']} "
        f"model, quorum {config['min-sites']} of {len(coordinator.sites)} sites) to "
        f"{coordinator.local_address}; run folder {plan.run_dir}\n  log: {log_path}; Ctrl-C stops "
        "following (the run goes on at the coordinator)",
        highlight=False,
        soft_wrap=True,
    )
    with sigterm_as_interrupt():
        try:
            code = submit_run(plan, lambda line: console.print(line, highlight=False, markup=False))
        except CoordinatorNotRunning as error:
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
    summary = read_json(plan.run_dir / SUMMARY_FILE)
    if summary.get("status") in ("stopped", "failed"):
        stopped = summary.get("stopped") or {}
        after = stopped.get("after_round")
        raise fail(
            f"the run {summary['status']} {'before its first round' if after is None else f'after round {after}'}: "
            f"{stopped.get('reason')}\n  run folder: {plan.run_dir} ("
            + (
                "submit the run again when the sites are online)"
                if after is None
                else f"continue it with `oncofed run --kit {kit} --resume {plan.run_dir}`)"
            ),
            code=1,
        )
    if summary.get("status") == "running":
        done = summary.get("last_round")
        raise fail(
            f"the run did not end: the coordinator or the connection to it stopped (flwr run exit code {code}; "
            f"last completed round: {'none' if done is None else done}). When `oncofed coordinator status --kit "
            f"{kit}` shows the run interrupted, continue it with `oncofed run --kit {kit} --resume {plan.run_dir}`",
            code=1,
        )
    if code != 0 or summary.get("status") != "completed" or not evaluations(records):
        outcome = f"flwr run exit code {code}" if code != 0 else "no site sent results"
        raise fail(
            f"the run did not finish ({outcome}); logs: {log_path}, "
            f"{coordinator.logs / 'superlink.log'}, and each site's <work-path>/logs/",
            code=1,
        )
    console.print(site_table(records))
    console.print(f"Results: {plan.run_dir} (metrics.jsonl, summary.json, models/)", highlight=False)
