"""The site's ClientApp: Flower glue only. Each handler loads, calls a plain function (site_app.federated_round),
and replies.

Replies carry weights and aggregates only: `num-examples` is the number of training cases (train) or
validation cases (evaluate); per-case values, case ids and file names stay in the site's work folder. Below the
site's `min-report-cases` an evaluate reply carries no number about its cases at all (site_app.disclosure).
"""

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from models.federation_settings import FederationSettings
from site_app.disclosure import ValidationPolicy
from site_app.federated_round import SiteRound, evaluate_round, train_round
from site_app.privacy import keep_details_local
from site_app.run_settings import SiteRunSettings
from site_app.run_state import run_state_dir
from site_app.site_config import SitePaths, resolve_site
from site_app.site_data import load_site_cases, site_overview
from site_app.site_log import site_logger

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


def _site_round(context: Context, site: SitePaths) -> SiteRound:
    """The site, its settings and cases, and its state folder for this run."""
    settings = SiteRunSettings.from_run_config(context.run_config)
    log = site_logger(site.work)
    return SiteRound(
        site=site,
        settings=settings,
        federation=FederationSettings.from_run_config(context.run_config),
        cases=load_site_cases(site, settings.pipeline, settings.val_fraction, settings.seed, log),
        state_dir=run_state_dir(site.work, context.run_config, context.run_id),
        device=_device(),
        log=log,
    )


@app.train()
def train(msg: Message, context: Context) -> Message:
    work = _site_round(context, resolve_site(context))
    config = msg.content["config"]
    server_round = int(config["server-round"])
    mu = config.get("proximal-mu")  # sent by the coordinator's FedProx only
    proximal_mu = float(mu) if isinstance(mu, int | float) and not isinstance(mu, bool) else None
    arrays, metrics = train_round(work, server_round, msg.content["arrays"], proximal_mu)
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    work = _site_round(context, resolve_site(context))
    policy = ValidationPolicy.from_context(context)
    server_round = int(msg.content["config"]["server-round"])
    # Aggregates only, or none below the site's minimum; per-case values stay in the work folder
    content = evaluate_round(work, server_round, msg.content["arrays"], policy, dict(context.run_config))
    return Message(content, reply_to=msg)
