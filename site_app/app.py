"""The site's ClientApp: Flower glue only. Each handler loads, calls a plain function, and replies.

Message, record and key names come from models.shared.wire. Replies carry weights and aggregates only: `num-examples`
is the number of training cases (train) or validation cases (evaluate); per-case values, case ids and file names
stay in the site's work folder. What may leave is set by the disclosure policy (site_app.disclosure.policy):
below the site's `min-report-cases` an evaluate reply carries no number about its cases at all, below
`min-train-cases` a train reply carries no weights, and a run outside the site's limits (site_app.settings.limits) is
refused before any case is loaded. Every run setting is read once per message into SiteRunSettings.

Issue 13's options act in site_app.learning.federated_round: with `local-norm` the site's own norm layers are put into each
incoming model and never sent; with `local-baseline` a local-only model trains on the same cases and stays in the
work folder (<work>/runs/<run key>/), and only its aggregates leave, through the same disclosure policy; weights
travel in the run's `transport-dtype`; with FedProx the instruction carries μ.
"""

from logging import Logger

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from models.shared.wire import (
    DESCRIBE,
    NUM_EXAMPLES,
    PROXIMAL_MU,
    RUN_KEY,
    SERVER_ROUND,
    SITE_MIN_REPORT_CASES,
    SITE_NAME,
    TRAIN_LOSS,
    Record,
    Validation,
)
from models.weights import to_record
from site_app.disclosure.error_details import keep_details_local
from site_app.disclosure.policy import DisclosurePolicy, bootstrap_seed, model_digest
from site_app.disclosure.refusals import declined_training, note_run_split_ignored, refusal, refused_training
from site_app.disclosure.validation_replies import (
    LocalOnly,
    ValidationPolicy,
    evaluation_content,
    refused_evaluation,
    suppressed_content,
)
from site_app.disclosure.validation_split import TRAINING, VALIDATION, record_released, released_set
from site_app.learning.federated_round import SiteRound, train_round, validate_local_only
from site_app.learning.run_state import run_state_dir
from site_app.learning.site_data import load_site_cases, preprocessed_cases, site_overview, split_inventory
from site_app.learning.validation import validate_cases
from site_app.learning.work_records import keep_validation
from site_app.settings.node_config import SitePaths, resolve_site
from site_app.settings.run_settings import SiteRunSettings
from site_app.settings.secret import site_secret
from site_app.site_log import site_logger

app = ClientApp(mods=[keep_details_local])


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _site_round(
    site: SitePaths, settings: SiteRunSettings, config: ConfigRecord, context: Context, log: Logger
) -> SiteRound:
    """The model side of this round: the site, its settings, and its state folder for this run."""
    state_dir = run_state_dir(site.work, config.get(RUN_KEY), context.run_id)
    return SiteRound(site=site, settings=settings, state_dir=state_dir, device=_device(), log=log)


def _proximal_mu(config: ConfigRecord) -> float | None:
    """FedProx's μ from the instruction (None: another strategy); a value that is not a number ≥ 0 is refused."""
    mu = config.get(PROXIMAL_MU)
    if mu is None:
        return None
    if isinstance(mu, bool) or not isinstance(mu, int | float) or not mu >= 0:
        raise ValueError(
            f"the train instruction's `{PROXIMAL_MU}` is {mu!r}, expected a number of at least 0"
        )
    return float(mu)


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
    config = msg.content[Record.CONFIG]
    server_round = int(config[SERVER_ROUND])

    # The site's policy first: a run outside its limits, or too few training cases, gets no weights
    refused = refusal(site, settings, context.node_config, log)
    if refused:
        log.warning("round %d: training refused: %s", server_round, refused)
        return Message(refused_training(refused), reply_to=msg)
    note_run_split_ignored(settings, policy, log)
    inventory, split = split_inventory(site, policy.validation_fraction, log)
    if len(split.training) < policy.min_train_cases:
        reason = f"n < {policy.min_train_cases}"  # fewer training cases than the site's min-train-cases
        log.warning("round %d: training declined: %s", server_round, reason)
        return Message(declined_training(reason, policy), reply_to=msg)

    # Load the data: a training set differing from the last one by fewer than min-train-cases is not used
    cases = preprocessed_cases(site, inventory, split, settings.pipeline, log)
    usable = released_set(site.work, TRAINING, [i["case_id"] for i in cases.train], policy.min_train_cases)
    chosen = [item for item in cases.train if usable.cases is not None and item["case_id"] in usable.cases]
    if len(chosen) < policy.min_train_cases:
        reason = usable.reason if usable.cases is None else f"n < {policy.min_train_cases}"
        log.warning("round %d: training declined: %s", server_round, reason)
        return Message(declined_training(reason, policy), reply_to=msg)

    # Train the global model (with this site's norm layers under local-norm), and the local-only baseline
    work = _site_round(site, settings, config, context, log)
    arrays, loss = train_round(work, server_round, msg.content[Record.ARRAYS], chosen, _proximal_mu(config))
    log.info(
        "round %d: trained on %d cases (%s), mean loss %.4f", server_round, len(chosen), usable.reason, loss
    )

    # Reply with weights (transport dtype; no norm layers under local-norm) and aggregates
    record_released(site.work, TRAINING, usable.cases)
    metrics = MetricRecord({TRAIN_LOSS: loss, NUM_EXAMPLES: len(chosen)})
    return Message(RecordDict({Record.ARRAYS: arrays, Record.METRICS: metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    # Load the settings and the site
    settings = SiteRunSettings.from_run_config(context.run_config)
    site = resolve_site(context, settings)
    policy = ValidationPolicy.for_site(settings, context.node_config)
    k = policy.min_report_cases
    log = site_logger(site.work)
    config = msg.content[Record.CONFIG]
    server_round = int(config[SERVER_ROUND])

    # A run outside the site's limits is refused before any case is loaded
    refused = refusal(site, settings, context.node_config, log)
    if refused:
        log.warning("round %d: validation refused: %s", server_round, refused)
        return Message(refused_evaluation(refused), reply_to=msg)
    note_run_split_ignored(settings, policy.disclosure, log)
    work = _site_round(site, settings, config, context, log)
    model = work.personalized(msg.content[Record.ARRAYS])  # with this site's norm layers under local-norm

    # Load the data: the site's own validation set, or the set last reported while fewer than k cases changed
    cases = load_site_cases(site, settings.pipeline, policy.disclosure.validation_fraction, log)
    usable = released_set(site.work, VALIDATION, [i["case_id"] for i in cases.val], k)
    log.info("round %d: validation set: %s", server_round, usable.reason)
    if usable.cases is None:
        log.warning("round %d: validation suppressed: %s", server_round, usable.reason)
        return Message(suppressed_content(policy, usable.reason), reply_to=msg)

    # Validate: per-case values stay here, in the work folder
    chosen = [item for item in cases.val if item["case_id"] in usable.cases]
    results, n_failed = validate_cases(
        model, chosen, settings.pipeline, policy.regions, work.device, log, settings.min_lesion_mm3
    )
    if not results:
        raise ValueError(f"none of the {len(chosen)} validation cases could be validated (see the site log)")
    keep_validation(site, settings, server_round, to_record(model), results)  # the model validated here
    final = released_set(site.work, VALIDATION, [r.case_id for r in results], k)
    if final.cases is None:
        log.warning("round %d: validation suppressed: %s", server_round, final.reason)
        return Message(suppressed_content(policy, final.reason), reply_to=msg)
    released = [r for r in results if r.case_id in final.cases]
    model_id = model_digest(msg.content[Record.ARRAYS])
    seed = bootstrap_seed(site_secret(site.work), model_id, sorted(final.cases))
    local_only = None
    if settings.local_baseline and len(released) >= k:  # the local-only model on the same released cases
        items = [item for item in chosen if item["case_id"] in final.cases]
        local_only = LocalOnly(validate_local_only(work, items, released, server_round, dict(policy.regions)))
    content = evaluation_content(released, cases.n_skipped + n_failed, policy, seed, local_only)
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
