"""The coordinator's commands: `oncofed provision`, `oncofed coordinator start|status|revoke`, `oncofed run`.

Each command reads its options and calls one function of deploy/coordinator/ (`reports_errors` turns what it raises
into an `error:` line and exit code). Those modules load cryptography and Flower when a command runs, never when
`oncofed` starts.
"""

from pathlib import Path
from typing import Annotated

import click
import typer

from deploy.run_options import TrackingUriOption
from models.shared.exit_codes import reports_errors

app = typer.Typer()
coordinator = typer.Typer(help="The coordinator (Flower SuperLink), from its kit.", no_args_is_help=True)
app.add_typer(coordinator, name="coordinator")

CoordinatorKitOption = Annotated[
    Path, typer.Option("--kit", help="The coordinator kit folder (`oncofed provision` wrote it).")
]


@app.command("provision", no_args_is_help=True)
@reports_errors
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
    wheelhouse: Annotated[
        bool,
        typer.Option(
            "--wheelhouse",
            help="Put every wheel a site installs (CPU torch included) into each new site kit's wheels/: "
            "the site installs offline. Without it the kit installs from an index, against the same hashed lock.",
        ),
    ] = False,
    wheel_cache: Annotated[
        Path | None,
        typer.Option(
            "--wheel-cache",
            help="Folder of downloaded wheels, outside the kits, reused by later provisionings "
            "(default ~/.cache/oncofed/wheels).",
        ),
    ] = None,
) -> None:
    """Create the federation's CA, the coordinator kit (with the release app) and one kit per site.

    Site kits hold no private key: each hospital makes its pair with `oncofed site keygen` and sends the
    `.pub`. A site added while the coordinator runs is registered at once (no restart). Each new site kit gets
    requirements.lock (every wheel with its SHA-256; the wheels are fetched into the cache once per machine).
    """
    from deploy.coordinator.provisioning import provision_federation

    provision_federation(spec, out, ca, add_site, public_key, generate_site_keys, wheelhouse, wheel_cache)


@coordinator.command("start", no_args_is_help=True)
@reports_errors
def coordinator_start(kit: CoordinatorKitOption) -> None:
    """Run the SuperLink on 127.0.0.1 behind nginx on the public port, and register the sites' keys.

    TLS, SuperNode authentication and a persistent database in the kit's `state/`; sites reach only the
    Fleet API through nginx; revoked sites are not registered. Needs the CA certificate, never its key. In the
    foreground until Ctrl-C or SIGTERM (the first stops it within seconds, a second at once; exit 0).
    """
    from deploy.coordinator.serving import serve_coordinator

    serve_coordinator(kit)


@coordinator.command("status", no_args_is_help=True)
@reports_errors
def coordinator_status(kit: CoordinatorKitOption) -> None:
    """List the federation's sites and runs.

    Every site by name (online, offline, last heard, revoked: `flwr supernode list` shows node ids only) and every
    run folder with its state and last completed round; a run whose coordinator died shows as interrupted.
    """
    from deploy.coordinator.status import show_status

    show_status(kit)


@app.command("run", no_args_is_help=True)
@reports_errors
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
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Submit the kit's release app (or --fab) to the coordinator and stream its log.

    Runs on the coordinator host (the SuperLink's control port is on 127.0.0.1 only). Results go to the kit's
    `runs/<time>/`; the log shows a participation line per round (who took part, who is missing and why).
    Ctrl-C stops following, the run goes on at the coordinator. The quorum (`min-sites`) defaults to a majority
    of the kit's sites. Exit 5 (refused) when every site refused the app.
    """
    if resume is not None and (preset is not None or init is not None):
        raise click.UsageError("--resume continues a run with its own model: leave out --preset and --init")
    from deploy.coordinator.federated_run import RunRequest, run_federation

    run_federation(RunRequest(kit, rounds, preset, run_config, fab, resume, init, tracking_uri))


@coordinator.command("revoke", no_args_is_help=True)
@reports_errors
def coordinator_revoke(
    kit: Annotated[Path, typer.Option("--kit", help="The coordinator kit.")],
    site: Annotated[str, typer.Option("--site", help="The site to revoke.")],
    reason: Annotated[str, typer.Option(help="Why (kept in revoked-sites.toml).")] = "",
) -> None:
    """Unregister a site's key from the running SuperLink and never register it again."""
    from deploy.coordinator.revoke import revoke_site

    revoke_site(kit, site, reason)
