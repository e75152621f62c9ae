"""The coordinator's ServerApp: wires settings, run folder, strategy and the federated loop; the logic lives elsewhere.

A new run starts from a fresh model of the preset (or from `init-model`) and validates it in round 0; a resumed
run (`resume`, set by `oncofed run --resume`) continues in its run folder after the round of its checkpoint, with
the same run key (models.shared.wire.RUN_KEY: the sites' run state) and the strategy's saved state.

The strategy is the run config's (server_app.strategies.registry: fedavg, fedprox, fedadam, fedyogi, the robust
fedmedian, fedtrimmedavg, krum, multikrum, central DP around the first two; every update's norm bounded and filed as
`update-norm`, no site above `max-site-weight`); weights travel in `transport-dtype`, and with `local-norm`
without the normalization layers.
"""

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from logging import ERROR, INFO, WARNING

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from monai.utils import set_determinism

from models.model_source import checkpoint_norm_meta, inference_meta
from models.norm_layers import shared_state_names
from models.presets import build_model
from models.shared.wire import RUN_KEY
from models.transport import as_sent
from models.weights import to_record
from server_app.app_identity import read_app_identity, write_app_identity
from server_app.coordinator_settings import ServerRunSettings
from server_app.grid.packed import PackedGrid
from server_app.grid.traffic import MeteredGrid, TrafficLedger
from server_app.report.site_table import evaluations, site_table_text
from server_app.rounds.loop import ALL_SELECTED, FederatedLoop, Outcome
from server_app.rounds.pending_round import PendingRound
from server_app.rounds.quorum import Presence
from server_app.rounds.resume import initial_model, resume_run
from server_app.rounds.round_checkpoint import restore_strategy
from server_app.rounds.site_directory import SiteDirectory
from server_app.run_record.best_model import BestRound
from server_app.run_record.checkpoints import Checkpointer
from server_app.run_record.run_folder import COMPLETED, FAILED, RUNNING, STOPPED, RunFolder, read_metrics
from server_app.run_record.summary import build_summary
from server_app.run_record.tracking import track_run
from server_app.strategies.registry import RunStrategy, build_strategy

app = ServerApp()


@dataclass(frozen=True)
class FabIdentity:
    """The Flower app bundle a run was started with (Flower's Run.fab_id, fab_version, fab_hash)."""

    id: str
    version: str
    hash: str


class RunStopped(RuntimeError):
    """The run ended before its last round; summary.json says after which round and why."""


@app.main()
def main(grid: Grid, context: Context) -> None:
    fab = FabIdentity(grid.run.fab_id, grid.run.fab_version, grid.run.fab_hash)
    outcome = run_federation(grid, context.run_config, fab)
    if outcome.status != COMPLETED:
        raise RunStopped(outcome.reason)


def run_federation(grid: Grid, run_config: Mapping[str, object], fab: FabIdentity | None = None) -> Outcome:
    """The whole run on `grid`; returns how it ended (summary.json and the report are written either way).
    `fab`: the app bundle the run was started with, kept as app.json (the model card names it)."""
    # Settings, the strategy (run config `strategy`; quorum, deadlines and reply checks are the loop's)
    settings = ServerRunSettings.from_run_config(run_config)
    federation = settings.strategy
    set_determinism(seed=settings.seed)  # DP noise is drawn from numpy's global generator
    # central DP's n: the federation's sites (its noise σ = z·C/n), the quorum when the sites are not named
    n_sites = len(settings.expected_sites) or settings.min_sites
    strategies = build_strategy(federation, n_sites, **ALL_SELECTED)
    strategy = strategies.run
    meta = {  # in every checkpoint: site predict, export
        **inference_meta(settings.spacing_mm, settings.patch_size),
        **checkpoint_norm_meta(federation.local_norm),
    }
    model = build_model(settings.model_preset, seed=settings.seed)
    full_initial = to_record(model)
    shared = shared_state_names(model, federation.local_norm)  # without the norm layers with local-norm
    fresh = ArrayRecord({name: full_initial[name] for name in shared})
    started = time.monotonic()
    app_sha256 = fab.hash if fab is not None else ""  # what a site's gate refuses, when one does
    traffic = TrafficLedger()
    grid = PackedGrid(MeteredGrid(grid, traffic))  # bytes metered as they travel, packed

    # A new run folder, or the resumed run's folder and checkpoint
    if settings.resume:
        run, state = resume_run(settings.run_dir, settings.model_preset, settings.num_rounds)
        restore_strategy(strategy, state.strategy_state)
        arrays, last_done = state.arrays, state.round
        loop_state = {
            "directory": SiteDirectory.from_state(state.sites, run.append_refusal, app_sha256),
            "presence": Presence.from_state(state.presence),
            "checkpointer": Checkpointer(run, settings.model_preset, meta, BestRound.from_state(state.best)),
            "pooled": dict(state.pooled),
            "pending": PendingRound.from_state(state.pending, state.arrays) if state.pending else None,
        }
        log(INFO, "Resuming the run in %s after round %d", run.path, last_done)
        if state.pending:  # one message per round: the next message carries this round's validation
            log(
                INFO,
                "Round %d was trained before the stop; its validation comes with the next message",
                last_done + 1,
            )
    else:
        arrays, last_done = fresh, None
        if settings.init_model is not None:  # checked before a run folder exists
            full_initial = initial_model(settings.init_model, settings.model_preset, full_initial)
            arrays = ArrayRecord({name: full_initial[name] for name in shared})
        run = RunFolder.create(settings.run_dir, run_config)
        loop_state = {
            "directory": SiteDirectory(run.append_refusal, app_sha256),
            "checkpointer": Checkpointer(run, settings.model_preset, meta),
        }
    loop = FederatedLoop(
        grid, strategy, settings, run, settings.model_preset, settings.num_rounds, **loop_state
    )
    if fab is not None:
        keep_app_identity(run, fab)
    wire_up(loop, strategies, traffic, full_initial, federation.transport_dtype)
    write_summary(loop, Outcome(RUNNING, last_done, arrays), settings.num_rounds, started)
    loop.after_round = lambda: write_summary(
        loop, Outcome(RUNNING, loop.last_round, arrays), settings.num_rounds, started
    )

    # The rounds
    try:
        outcome = loop.run_rounds(arrays, last_done)
    except (SystemExit, KeyboardInterrupt):
        reason = "the ServerApp was stopped (the coordinator shut down, or `flwr stop`)"
        write_summary(loop, Outcome(STOPPED, loop.last_round, arrays, reason), settings.num_rounds, started)
        raise
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        write_summary(loop, Outcome(FAILED, loop.last_round, arrays, reason), settings.num_rounds, started)
        raise
    write_summary(loop, outcome, settings.num_rounds, started)
    write_report(run)
    track_run(run.path, settings.tracking_uri)  # the report and model card
    return outcome


def wire_up(
    loop: FederatedLoop,
    strategies: RunStrategy,
    traffic: TrafficLedger,
    full_initial: ArrayRecord,
    transport_dtype: str,
) -> None:
    """The run's parts of every round: the run key in every instruction, replies checked in the transport dtype,
    bytes and privacy spent in each site's record, and the model saved whole, as the sites validated it."""
    config = {RUN_KEY: loop.run.key}  # the same for a resumed run (same folder): the sites' run state
    loop.train_config = ConfigRecord(dict(config))  # FedAvg adds the round, FedProx μ
    loop.evaluate_config = ConfigRecord(dict(config))
    loop.transport_dtype = transport_dtype
    loop.directory.max_cases = dict(loop.settings.max_cases)
    loop.record_extras = lambda rnd, site: {
        "bytes": traffic.site_round_of(rnd, loop.directory.nodes_of(site)),
        "privacy": strategies.privacy(rnd),
        "update-norm": site_update_norm(strategies.update_norms(rnd), loop.directory.nodes_of(site)),
        "update-cosine": site_update_norm(strategies.update_cosines(rnd), loop.directory.nodes_of(site)),
    }
    # With local-norm the saved model's norm layers are the initial ones (each site validated its own)
    loop.saved_model = lambda arrays: ArrayRecord({**full_initial, **as_sent(arrays, transport_dtype)})


def site_update_norm(norms: dict[int, float], nodes: list[int]) -> float | None:
    """The norm (or cosine) of the update a site's node sent (None when it sent none); the largest if it had
    several."""
    found = [norms[node] for node in nodes if node in norms]
    return max(found) if found and all(math.isfinite(n) for n in found) else None


def keep_app_identity(run: RunFolder, fab: FabIdentity) -> None:
    """app.json: the FAB that trained the run; a resumed run started with another FAB says so in the log."""
    recorded = read_app_identity(run.path).get("fab_sha256", "")
    if recorded and fab.hash and recorded != f"sha256:{fab.hash}":
        log(WARNING, "The resumed run uses another app bundle than it started with (%s before)", recorded)
    write_app_identity(run.path, fab.id, fab.version, fab.hash)


def write_summary(loop: FederatedLoop, outcome: Outcome, rounds_planned: int, started: float) -> None:
    loop.run.write_summary(
        build_summary(
            read_metrics(loop.run.path),
            loop.pooled,
            loop.checkpointer.best,
            loop.directory.overviews,
            rounds_planned,
            time.monotonic() - started,
            status=outcome.status,
            last_round=outcome.last_round,
            reason=outcome.reason,
        )
    )
    track_run(
        loop.run.path, loop.settings.tracking_uri
    )  # MLflow follows summary.json: every round, every end


def write_report(run: RunFolder) -> None:
    """The per-site table and the report come last, the report's plotting imported here: a problem with either
    never costs the saved results."""
    records = read_metrics(run.path)
    if not evaluations(records):
        log(INFO, "Run folder: %s (no report: no site's validation arrived)", run.path)
        return
    try:
        from server_app.report.writer import write_report as write_files

        log(INFO, "Run folder: %s\n%s", run.path, site_table_text(records))
        log(INFO, "Report: %s", write_files(run.path).html)
    except Exception as error:  # noqa: BLE001 - the report can be rebuilt from the run folder
        log(
            ERROR,
            "The report could not be written (%s: %s); rebuild it with `oncofed report %s`",
            type(error).__name__,
            error,
            run.path,
        )
