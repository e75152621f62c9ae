"""The site's ClientApp: Flower glue only. Each handler loads, calls a plain function, and replies.

Message, record and key names come from models.wire. Replies carry weights and aggregates only: `num-examples`
is the number of training cases (train) or validation cases (evaluate); per-case values, case ids and file names
stay in the site's work folder. Below the site's `min-report-cases` an evaluate reply carries no number about its
cases at all (site_app.disclosure). Every run setting is read once per message into SiteRunSettings.
"""

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from data_prep.dataset import training_dataset
from models.presets import build_model
from models.weights import load_record, to_record
from models.wire import DESCRIBE, NUM_EXAMPLES, SERVER_ROUND, SITE_NAME, TRAIN_LOSS, Record, Validation
from site_app.disclosure import ValidationPolicy, evaluation_content
from site_app.privacy import keep_details_local
from site_app.run_settings import SiteRunSettings
from site_app.site_config import resolve_site
from site_app.site_data import load_site_cases, site_overview
from site_app.site_log import site_logger
from site_app.training import train_epochs
from site_app.validation import validate_cases
from site_app.work_records import keep_validation

app = ClientApp(mods=[keep_details_local])


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@app.query(DESCRIBE)
def describe(msg: Message, context: Context) -> Message:
    """The site's name, so the coordinator can attribute its metrics, and an aggregate overview of its data."""
    site = resolve_site(context, SiteRunSettings.from_run_config(context.run_config))
    overview = MetricRecord(site_overview(site, site_logger(site.work)))
    content = RecordDict({Record.SITE: ConfigRecord({SITE_NAME: site.name}), Record.OVERVIEW: overview})
    return Message(content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    # Load the settings, the site and the global model
    settings = SiteRunSettings.from_run_config(context.run_config)
    site = resolve_site(context, settings)
    log = site_logger(site.work)
    server_round = int(msg.content[Record.CONFIG][SERVER_ROUND])
    model = build_model(settings.model_preset)
    load_record(model, msg.content[Record.ARRAYS])

    # Load the data
    cases = load_site_cases(site, settings.pipeline, settings.val_fraction, settings.seed, log)
    dataset = training_dataset(
        cases.train, settings.pipeline, site.work / "cache", seed=settings.seed + server_round
    )

    # Train
    loss = train_epochs(
        model,
        dataset,
        epochs=settings.local_epochs,
        learning_rate=settings.learning_rate,
        batch_size=settings.batch_size,
        device=_device(),
    )
    log.info("round %d: trained on %d cases, mean loss %.4f", server_round, len(cases.train), loss)

    # Reply with weights and aggregates
    metrics = MetricRecord({TRAIN_LOSS: loss, NUM_EXAMPLES: len(cases.train)})
    return Message(RecordDict({Record.ARRAYS: to_record(model), Record.METRICS: metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    # Load the settings, the site and the global model
    settings = SiteRunSettings.from_run_config(context.run_config)
    site = resolve_site(context, settings)
    policy = ValidationPolicy.for_site(settings, context.node_config)
    log = site_logger(site.work)
    server_round = int(msg.content[Record.CONFIG][SERVER_ROUND])
    model = build_model(settings.model_preset)
    load_record(model, msg.content[Record.ARRAYS])

    # Load the data
    cases = load_site_cases(site, settings.pipeline, settings.val_fraction, settings.seed, log)

    # Validate: per-case values stay here, in the work folder
    results, n_failed = validate_cases(model, cases.val, settings.pipeline, policy.regions, _device(), log)
    if not results:
        raise ValueError(
            f"none of the {len(cases.val)} validation cases could be validated (see the site log)"
        )
    keep_validation(site, settings, server_round, msg.content[Record.ARRAYS], results)
    content = evaluation_content(results, cases.n_skipped + n_failed, policy)
    log.info(
        "round %d: validated %d cases (%s, minimum %d)",
        server_round,
        len(results),
        content[Record.VALIDATION][Validation.STATUS],
        policy.min_report_cases,
    )

    # Reply with aggregates only, or with none below the site's minimum
    return Message(content, reply_to=msg)
