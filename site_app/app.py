"""The site's ClientApp: Flower glue only. Each handler loads, calls a plain function, and replies.

Replies carry weights and aggregates only: `num-examples` is the number of training cases (train) or
validation cases (evaluate); per-case values, case ids and file names stay in the site's work folder. Below the
site's `min-report-cases` an evaluate reply carries no number about its cases at all (site_app.disclosure).
"""

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from data_prep.dataset import training_dataset
from models.presets import build_model
from models.weights import load_record, to_record
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


@app.query("describe")
def describe(msg: Message, context: Context) -> Message:
    """The site's name, so the coordinator can attribute its metrics, and an aggregate overview of its data."""
    site = resolve_site(context)
    overview = MetricRecord(site_overview(site, site_logger(site.work)))
    return Message(
        RecordDict({"site": ConfigRecord({"site-name": site.name}), "overview": overview}), reply_to=msg
    )


@app.train()
def train(msg: Message, context: Context) -> Message:
    # Load the site, the settings and the global model
    site = resolve_site(context)
    settings = SiteRunSettings.from_run_config(context.run_config)
    log = site_logger(site.work)
    server_round = int(msg.content["config"]["server-round"])
    model = build_model(settings.model_preset)
    load_record(model, msg.content["arrays"])

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
        seed=settings.seed + server_round,
    )
    log.info("round %d: trained on %d cases, mean loss %.4f", server_round, len(cases.train), loss)

    # Reply with weights and aggregates
    metrics = MetricRecord({"train-loss": loss, "num-examples": len(cases.train)})
    return Message(RecordDict({"arrays": to_record(model), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    # Load the site, the settings and the global model
    site = resolve_site(context)
    settings = SiteRunSettings.from_run_config(context.run_config)
    policy = ValidationPolicy.from_context(context)
    log = site_logger(site.work)
    server_round = int(msg.content["config"]["server-round"])
    model = build_model(settings.model_preset)
    load_record(model, msg.content["arrays"])

    # Load the data
    cases = load_site_cases(site, settings.pipeline, settings.val_fraction, settings.seed, log)

    # Validate: per-case values stay here, in the work folder
    results, n_failed = validate_cases(model, cases.val, settings.pipeline, policy.regions, _device(), log)
    if not results:
        raise ValueError(
            f"none of the {len(cases.val)} validation cases could be validated (see the site log)"
        )
    keep_validation(
        site, context.run_config, server_round, msg.content["arrays"], settings.model_preset, results
    )
    content = evaluation_content(results, cases.n_skipped + n_failed, policy)
    log.info(
        "round %d: validated %d cases (%s, minimum %d)",
        server_round,
        len(results),
        content["validation"]["status"],
        policy.min_report_cases,
    )

    # Reply with aggregates only, or with none below the site's minimum
    return Message(content, reply_to=msg)
