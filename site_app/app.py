"""The site's ClientApp: Flower glue only. Each handler loads, calls a plain function, and replies.

Replies carry weights and aggregates only: `num-examples` is the number of training cases (train) or
validation cases (evaluate); per-case values, case ids and file names stay in the site's work folder.
"""

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from data_prep.dataset import training_dataset, validation_dataset
from data_prep.discovery import discover_cases
from models.presets import build_model
from models.weights import load_record, to_record
from site_app.metrics import summarize
from site_app.privacy import keep_details_local
from site_app.run_settings import SiteRunSettings
from site_app.site_config import resolve_site
from site_app.site_data import load_site_cases
from site_app.site_log import site_logger
from site_app.training import train_epochs
from site_app.validation import validate_cases

app = ClientApp(mods=[keep_details_local])


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@app.query("describe")
def describe(msg: Message, context: Context) -> Message:
    """The site's name, so the coordinator can attribute its metrics, and an aggregate overview of its data."""
    site = resolve_site(context)
    overview = MetricRecord({"n-cases": len(discover_cases(site.data))})
    return Message(RecordDict({"site": ConfigRecord({"site-name": site.name}), "overview": overview}), reply_to=msg)


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
    dataset = training_dataset(cases.train, settings.pipeline, site.work / "cache", seed=settings.seed + server_round)

    # Train
    loss = train_epochs(model, dataset, epochs=settings.local_epochs, learning_rate=settings.learning_rate,
                        batch_size=settings.batch_size, device=_device())
    log.info("round %d: trained on %d cases, mean loss %.4f", server_round, len(cases.train), loss)

    # Reply with weights and aggregates
    metrics = MetricRecord({"train-loss": loss, "num-examples": len(cases.train)})
    return Message(RecordDict({"arrays": to_record(model), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    # Load the site, the settings and the global model
    site = resolve_site(context)
    settings = SiteRunSettings.from_run_config(context.run_config)
    log = site_logger(site.work)
    model = build_model(settings.model_preset)
    load_record(model, msg.content["arrays"])

    # Load the data
    cases = load_site_cases(site, settings.pipeline, settings.val_fraction, settings.seed, log)
    dataset = validation_dataset(cases.val, settings.pipeline, site.work / "cache")

    # Validate: per-case values stay here
    per_case = validate_cases(model, dataset, settings.pipeline.patch_size, settings.pipeline.spacing_mm, _device())
    summary = summarize(per_case)
    log.info("round %s: validated %d cases, mean Dice %.4f", msg.content["config"].get("server-round"),
             len(per_case), summary["dice-mean"])

    # Reply with aggregates only
    return Message(RecordDict({"metrics": MetricRecord({**summary, "num-examples": len(per_case)})}), reply_to=msg)
