"""The site's ClientApp: Flower glue only. Each handler loads, calls a plain function, and replies.

Message, record and key names come from models.wire. Replies carry weights and aggregates only: `num-examples`
is the number of training cases (train) or validation cases (evaluate); per-case values, case ids and file names
stay in the site's work folder. What may leave is set by the disclosure policy (site_app.disclosure_policy):
below the site's `min-report-cases` an evaluate reply carries no number about its cases at all, below
`min-train-cases` a train reply carries no weights, and a run outside the site's limits (site_app.site_limits) is
refused before any case is loaded. Every run setting is read once per message into SiteRunSettings.
"""

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from data_prep.dataset import training_dataset
from models.presets import build_model
from models.weights import load_record, to_record
from models.wire import (
    DESCRIBE,
    NUM_EXAMPLES,
    SERVER_ROUND,
    SITE_MIN_REPORT_CASES,
    SITE_NAME,
    TRAIN_LOSS,
    Record,
    Validation,
)
from site_app.disclosure import ValidationPolicy, evaluation_content, refused_evaluation, suppressed_content
from site_app.disclosure_policy import DisclosurePolicy, bootstrap_seed, model_digest
from site_app.policy_replies import declined_training, note_run_split_ignored, refusal, refused_training
from site_app.privacy import keep_details_local
from site_app.run_settings import SiteRunSettings
from site_app.site_config import resolve_site
from site_app.site_data import load_site_cases, site_overview, split_inventory
from site_app.site_log import site_logger
from site_app.site_secret import site_secret
from site_app.training import train_epochs
from site_app.validation import validate_cases
from site_app.validation_split import TRAINING, VALIDATION, record_released, released_set
from site_app.work_records import keep_validation

app = ClientApp(mods=[keep_details_local])


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@app.query(DESCRIBE)
def describe(msg: Message, context: Context) -> Message:
    """The site's name, so the coordinator can attribute its metrics, and an aggregate overview of its data."""
    settings = SiteRunSettings.from_run_config(context.run_config)
    site = resolve_site(context, settings)
    k = DisclosurePolicy.for_site(context.node_config, settings).min_report_cases
    overview = MetricRecord(site_overview(site, k, site_logger(site.work)))
    identity = ConfigRecord({SITE_NAME: site.name, SITE_MIN_REPORT_CASES: k})  # k: bounds a withheld count
    content = RecordDict({Record.SITE: identity, Record.OVERVIEW: overview})
    return Message(content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    # Load the settings and the site
    settings = SiteRunSettings.from_run_config(context.run_config)
    site = resolve_site(context, settings)
    policy = DisclosurePolicy.for_site(context.node_config, settings)
    log = site_logger(site.work)
    server_round = int(msg.content[Record.CONFIG][SERVER_ROUND])

    # The site's policy first: a run outside its limits, or too few training cases, gets no weights
    refused = refusal(site, settings, context.node_config, log)
    if refused:
        log.warning("round %d: training refused: %s", server_round, refused)
        return Message(refused_training(refused), reply_to=msg)
    note_run_split_ignored(settings, policy, log)
    _, split = split_inventory(site, policy.validation_fraction, log)
    if len(split.training) < policy.min_train_cases:
        reason = f"n < {policy.min_train_cases}"  # fewer training cases than the site's min-train-cases
        log.warning("round %d: training declined: %s", server_round, reason)
        return Message(declined_training(reason, policy), reply_to=msg)

    # Load the data: a training set differing from the last one by fewer than min-train-cases is not used
    cases = load_site_cases(site, settings.pipeline, policy.validation_fraction, log)
    usable = released_set(site.work, TRAINING, [i["case_id"] for i in cases.train], policy.min_train_cases)
    chosen = [item for item in cases.train if usable.cases is not None and item["case_id"] in usable.cases]
    if len(chosen) < policy.min_train_cases:
        reason = usable.reason if usable.cases is None else f"n < {policy.min_train_cases}"
        log.warning("round %d: training declined: %s", server_round, reason)
        return Message(declined_training(reason, policy), reply_to=msg)
    model = build_model(settings.model_preset)
    load_record(model, msg.content[Record.ARRAYS])
    dataset = training_dataset(
        chosen, settings.pipeline, site.work / "cache", seed=settings.seed + server_round
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
    log.info(
        "round %d: trained on %d cases (%s), mean loss %.4f", server_round, len(chosen), usable.reason, loss
    )

    # Reply with weights and aggregates
    record_released(site.work, TRAINING, usable.cases)
    metrics = MetricRecord({TRAIN_LOSS: loss, NUM_EXAMPLES: len(chosen)})
    return Message(RecordDict({Record.ARRAYS: to_record(model), Record.METRICS: metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    # Load the settings and the site
    settings = SiteRunSettings.from_run_config(context.run_config)
    site = resolve_site(context, settings)
    policy = ValidationPolicy.for_site(settings, context.node_config)
    k = policy.min_report_cases
    log = site_logger(site.work)
    server_round = int(msg.content[Record.CONFIG][SERVER_ROUND])

    # A run outside the site's limits is refused before any case is loaded
    refused = refusal(site, settings, context.node_config, log)
    if refused:
        log.warning("round %d: validation refused: %s", server_round, refused)
        return Message(refused_evaluation(refused), reply_to=msg)
    note_run_split_ignored(settings, policy.disclosure, log)
    model = build_model(settings.model_preset)
    load_record(model, msg.content[Record.ARRAYS])

    # Load the data: the site's own validation set, or the set last reported while fewer than k cases changed
    cases = load_site_cases(site, settings.pipeline, policy.disclosure.validation_fraction, log)
    usable = released_set(site.work, VALIDATION, [i["case_id"] for i in cases.val], k)
    log.info("round %d: validation set: %s", server_round, usable.reason)
    if usable.cases is None:
        log.warning("round %d: validation suppressed: %s", server_round, usable.reason)
        return Message(suppressed_content(policy, usable.reason), reply_to=msg)

    # Validate: per-case values stay here, in the work folder
    chosen = [item for item in cases.val if item["case_id"] in usable.cases]
    results, n_failed = validate_cases(model, chosen, settings.pipeline, policy.regions, _device(), log)
    if not results:
        raise ValueError(f"none of the {len(chosen)} validation cases could be validated (see the site log)")
    keep_validation(site, settings, server_round, msg.content[Record.ARRAYS], results)
    final = released_set(site.work, VALIDATION, [r.case_id for r in results], k)
    if final.cases is None:
        log.warning("round %d: validation suppressed: %s", server_round, final.reason)
        return Message(suppressed_content(policy, final.reason), reply_to=msg)
    released = [r for r in results if r.case_id in final.cases]
    model_id = model_digest(msg.content[Record.ARRAYS])
    seed = bootstrap_seed(site_secret(site.work), model_id, sorted(final.cases))
    content = evaluation_content(released, cases.n_skipped + n_failed, policy, seed)
    log.info(
        "round %d: validated %d cases (%s, minimum %d; %s)",
        server_round,
        len(released),
        content[Record.VALIDATION][Validation.STATUS],
        k,
        final.reason,
    )
    if content.metric_records:
        record_released(site.work, VALIDATION, final.cases)

    # Reply with aggregates only, or with none below the site's minimum
    return Message(content, reply_to=msg)
