"""The coordinator's ServerApp: wires settings, sites, strategy and run folder; the logic lives elsewhere."""

import time
from logging import ERROR, INFO

from flwr.app import ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from models.model_source import inference_meta
from models.presets import build_model
from models.weights import to_record
from server_app.app_identity import write_app_identity
from server_app.checkpoints import Checkpointer
from server_app.run_folder import RunFolder, read_metrics
from server_app.run_settings import ServerRunSettings
from server_app.site_directory import SiteDirectory
from server_app.site_table import site_table_text
from server_app.strategy import SiteFedAvg
from server_app.summary import build_summary

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    # Settings, run folder and the initial global model
    settings = ServerRunSettings.from_run_config(context.run_config)
    run = RunFolder.create(settings.run_dir, context.run_config)
    write_app_identity(run.path, grid.run.fab_id, grid.run.fab_version, grid.run.fab_hash)
    initial = to_record(build_model(settings.model_preset, seed=settings.seed))
    started = time.monotonic()

    # Strategy: FedAvg weighted by num-examples, results filed per site
    sites = SiteDirectory(timeout_s=settings.round_timeout_s, on_refusal=run.append_refusal)
    strategy = SiteFedAvg(
        sites=sites,
        run=run,
        model_keys=initial.keys(),
        min_train_nodes=settings.min_sites,
        min_evaluate_nodes=settings.min_sites,
        min_available_nodes=settings.min_sites,
    )
    checkpointer = Checkpointer(
        run, settings.model_preset, inference_meta(settings.spacing_mm, settings.patch_size)
    )

    # Round 0: every site validates the initial model, so each site's starting point is on record
    replies = list(
        grid.send_and_receive(
            strategy.configure_evaluate(0, initial, ConfigRecord(), grid), timeout=settings.round_timeout_s
        )
    )
    strategy.aggregate_evaluate(0, replies)
    if replies and {r.metadata.src_node_id for r in replies} <= sites.refused:
        log(
            ERROR,
            "Every site refused this app (not approved by the site): %s. Nothing to train; the run ends. "
            "Sites approve an app with `oncofed site approve`.",
            ", ".join(sorted(sites.name(node) for node in sites.refused)),
        )
        return
    weighted = {0: strategy.latest_evaluation} if strategy.latest_evaluation else {}

    def after_round(server_round: int, arrays):  # Strategy.start's evaluate_fn
        checkpointer(server_round, arrays, strategy.latest_evaluation)
        if server_round and strategy.latest_evaluation:
            weighted[server_round] = strategy.latest_evaluation

    strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=settings.num_rounds,
        timeout=settings.round_timeout_s,
        train_config=ConfigRecord(),
        evaluate_config=ConfigRecord(),
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
