"""The coordinator's ServerApp: wires settings, sites, strategy and run folder; the logic lives elsewhere."""

import time
from logging import ERROR, INFO

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from monai.utils import set_determinism

from models.model_source import checkpoint_norm_meta, inference_meta
from models.norm_layers import shared_state_names
from models.presets import build_model
from models.transport import as_sent
from models.weights import to_record
from models.wire import RUN_KEY
from server_app.app_identity import write_app_identity
from server_app.checkpoints import Checkpointer
from server_app.run_folder import RunFolder, read_metrics
from server_app.run_settings import ServerRunSettings
from server_app.site_directory import SiteDirectory
from server_app.site_table import site_table_text
from server_app.strategies import build_strategy
from server_app.summary import build_summary
from server_app.traffic import MeteredGrid, TrafficLedger

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    # Settings, run folder and the initial global model (without the norm layers when they stay at the sites)
    settings = ServerRunSettings.from_run_config(context.run_config)
    federation = settings.strategy
    set_determinism(seed=settings.seed)  # DP noise is drawn from numpy's global generator
    run = RunFolder.create(settings.run_dir, context.run_config)
    write_app_identity(run.path, grid.run.fab_id, grid.run.fab_version, grid.run.fab_hash)
    model = build_model(settings.model_preset, seed=settings.seed)
    full_initial = to_record(model)
    shared = shared_state_names(model, federation.local_norm)
    initial = ArrayRecord({name: full_initial[name] for name in shared})
    started = time.monotonic()
    traffic = TrafficLedger()
    grid = MeteredGrid(grid, traffic)

    # Strategy (run config `strategy`), results filed per site
    sites = SiteDirectory(timeout_s=settings.round_timeout_s)
    strategies = build_strategy(
        federation,
        settings.min_sites,
        sites=sites,
        run=run,
        model_keys=initial.keys(),
        min_train_nodes=settings.min_sites,
        min_evaluate_nodes=settings.min_sites,
        min_available_nodes=settings.min_sites,
    )
    strategy = strategies.run
    strategies.sites.record_extras = lambda rnd, node: {
        "bytes": traffic.site_round(rnd, node),
        "privacy": strategies.privacy(rnd),
    }
    checkpointer = Checkpointer(
        run,
        settings.model_preset,
        {
            **inference_meta(settings.spacing_mm, settings.patch_size),
            **checkpoint_norm_meta(federation.local_norm),
        },
    )

    def latest_evaluation() -> MetricRecord | None:
        return strategies.sites.latest_evaluation

    # Round 0: every site validates the initial model, so each site's starting point is on record
    config = ConfigRecord({RUN_KEY: run.key})  # every instruction names the run (the sites' run state)
    strategy.aggregate_evaluate(
        0,
        grid.send_and_receive(
            strategy.configure_evaluate(0, initial, config, grid), timeout=settings.round_timeout_s
        ),
    )
    weighted = {0: latest_evaluation()} if latest_evaluation() else {}

    def after_round(server_round: int, arrays):  # Strategy.start's evaluate_fn
        # The model saved is the one the sites validated (in the transport precision), and whole: with
        # local-norm its norm layers are the initial ones (each site validated its own)
        validated = as_sent(arrays, federation.transport_dtype)
        checkpointer(server_round, ArrayRecord({**full_initial, **validated}), latest_evaluation())
        run.save_strategy_state(strategy.state_dict())  # FedAdam/FedYogi moments, the DP ledger
        if server_round and latest_evaluation():
            weighted[server_round] = latest_evaluation()

    strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=settings.num_rounds,
        timeout=settings.round_timeout_s,
        train_config=ConfigRecord({RUN_KEY: run.key}),  # FedAvg writes the round into each, FedProx μ
        evaluate_config=ConfigRecord({RUN_KEY: run.key}),
        evaluate_fn=after_round,
    )

    # Summary and the per-site table
    records = read_metrics(run.path)
    run.write_summary(
        build_summary(
            records, weighted, checkpointer, sites.overviews, settings.num_rounds, time.monotonic() - started
        )
    )
    log(INFO, "Run folder: %s\n%s", run.path, site_table_text(records))

    # The report comes last and imports its plotting here: a report problem never costs the saved results
    try:
        from server_app.report_files import write_report

        log(INFO, "Report: %s", write_report(run.path).html)
    except Exception as error:  # noqa: BLE001 - the report can be rebuilt from the run folder
        log(
            ERROR,
            "The report could not be written (%s: %s); rebuild it with `oncofed report %s`",
            type(error).__name__,
            error,
            run.path,
        )
