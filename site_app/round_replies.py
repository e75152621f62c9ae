"""The content of each reply a site sends: its description, a training round, a validation round (or both in one
reply: `round_reply`).

Replies carry weights and aggregates only: `num-examples` is the number of training cases (train) or validation
cases (evaluate); per-case values, case ids and file names stay in the site's work folder. What may leave is set
by the disclosure policy (site_app.disclosure.policy): below the site's `min-report-cases` an evaluate reply
carries no number about its cases at all, below `min-train-cases` a train reply carries no weights, and a run
outside the site's limits (site_app.settings.limits) is refused before any case is loaded.

The run's training options act in site_app.learning.federated_round: with `local-norm` the site's own norm layers
are put into each incoming model and never sent; with `local-baseline` a local-only model trains on the same
cases and stays in the work folder (<work>/runs/<run key>/), and only its aggregates leave, through the same
disclosure policy; with `personalize-epochs` each validation also fine-tunes the global model on the site's
training cases into a personalized model that stays in the work folder, and only its aggregates leave, alike;
weights travel in the run's `transport-dtype`; with FedProx the instruction carries μ.

After the last round, a site that consents (site_app.disclosure.model_sharing) sends its local-only model when
asked, and validates the other consenting sites' local-only models (aggregates only); without its consent it
refuses both, whatever the coordinator asks.
"""

import traceback

import torch
from flwr.app import ConfigRecord, MessageType, MetricRecord, RecordDict

from models.shared.round_reply import failed_validation, fuse_round_reply
from models.shared.wire import (
    NUM_EXAMPLES,
    SITE_MIN_REPORT_CASES,
    SITE_NAME,
    SITE_SHARES_LOCAL_MODEL,
    TRAIN_LOSS,
    Record,
    Validation,
)
from models.transport import encode
from models.weights import to_record
from site_app.disclosure.error_details import failure_reason
from site_app.disclosure.evaluation_budget import spend_evaluation
from site_app.disclosure.model_sharing import (
    NOT_CONSENTED,
    refused_cross_evaluation,
    refused_sharing,
    shares_local_model,
)
from site_app.disclosure.policy import DisclosurePolicy, bootstrap_seed
from site_app.disclosure.refusals import (
    declined_training,
    note_run_split_ignored,
    refusal,
    refused_evaluation,
    refused_training,
    site_limits,
    too_few_local_steps,
)
from site_app.disclosure.validation_replies import (
    KeptModel,
    ValidationPolicy,
    evaluation_content,
    suppressed_content,
)
from site_app.disclosure.validation_split import TRAINING, VALIDATION, record_released, released_set
from site_app.learning.federated_round import (
    SiteRound,
    train_round,
    validate_local_only,
    validate_personalized,
)
from site_app.learning.local_baseline import received_model
from site_app.learning.site_data import (
    SiteCases,
    load_site_cases,
    preprocessed_cases,
    site_overview,
    split_inventory,
)
from site_app.learning.validation import validate_cases
from site_app.learning.work_records import keep_validation
from site_app.settings.secret import site_secret
from site_app.site_message import SiteMessage


def describe_reply(message: SiteMessage) -> RecordDict:
    """The name the site calls itself, its min-report-cases (which bounds a withheld count) and an aggregate
    overview of its data."""
    k = DisclosurePolicy.for_site(message.node_config, message.settings).min_report_cases
    overview = MetricRecord(site_overview(message.site, k, message.log))
    shares = shares_local_model(message.node_config, message.settings, message.site.name)
    identity = ConfigRecord(
        {SITE_NAME: message.site.name, SITE_MIN_REPORT_CASES: k, SITE_SHARES_LOCAL_MODEL: shares}
    )
    return RecordDict({Record.SITE: identity, Record.OVERVIEW: overview})


def train_reply(message: SiteMessage) -> RecordDict:
    """Train the global model on the site's training cases, or say why the site's policy stops the round."""
    policy = DisclosurePolicy.for_site(message.node_config, message.settings)
    site, settings, log, server_round = message.site, message.settings, message.log, message.server_round

    # The site's policy first: a run outside its limits, or too few training cases, gets no weights
    refused = refusal(site, settings, message.node_config, log)
    if refused:
        log.warning("round %d: training refused: %s", server_round, refused)
        return refused_training(refused)
    note_run_split_ignored(settings, policy, log)
    inventory, split = split_inventory(site, policy.validation_fraction, log)
    if len(split.training) < policy.min_train_cases:
        return _declined(message, f"n < {policy.min_train_cases}", policy)  # below the site's min-train-cases

    # The data: a training set differing from the last one by fewer than min-train-cases is not used
    cases = preprocessed_cases(site, inventory, split, settings.pipeline, log)
    usable = released_set(site.work, TRAINING, [i["case_id"] for i in cases.train], policy.min_train_cases)
    chosen = [item for item in cases.train if usable.cases is not None and item["case_id"] in usable.cases]
    if len(chosen) < policy.min_train_cases:
        return _declined(
            message, usable.reason if usable.cases is None else f"n < {policy.min_train_cases}", policy
        )

    short = too_few_local_steps(settings, message.node_config, len(chosen))  # gradient inversion's best case
    if short:
        log.warning("round %d: training refused: %s", server_round, short)
        return refused_training(short)

    # Train the global model (with this site's norm layers under local-norm), and the local-only baseline
    work = message.site_round()
    arrays, loss = train_round(
        work, server_round, message.incoming, chosen, message.proximal_mu(), message.lr_scale()
    )
    log.info(
        "round %d: trained on %d cases (%s), mean loss %.4f", server_round, len(chosen), usable.reason, loss
    )

    # Weights (transport dtype; no norm layers under local-norm) and aggregates
    record_released(site.work, TRAINING, usable.cases)
    metrics = MetricRecord({TRAIN_LOSS: loss, NUM_EXAMPLES: len(chosen)})
    return RecordDict({Record.ARRAYS: arrays, Record.METRICS: metrics})


def round_reply(message: SiteMessage) -> RecordDict:
    """A train instruction's reply. When it also asks for the validation of the model it carries (the previous
    round's global model, models.shared.wire.EVALUATE_ROUND), the site validates it first, exactly as that round's
    evaluate instruction (same cases, seed, policy and evaluation budget), then trains on it; one reply holds
    both (models.shared.round_reply). A validation that raises is kept in the site's log, as a failed evaluate
    message's would be, and its part says only that it failed and the error's type; the training goes on."""
    validated = message.evaluate_round()
    if validated is None:
        return train_reply(message)
    try:
        validation = evaluate_reply(message.for_validation(validated))
    except Exception as error:  # noqa: BLE001 - as a failed evaluate message: details stay here, training goes on
        detail = "".join(traceback.format_exception(error))
        message.log.error("round %d: validation failed:\n%s", validated, detail)
        validation = failed_validation(failure_reason(MessageType.EVALUATE, error))
    return fuse_round_reply(train_reply(message), validation)


def local_model_reply(message: SiteMessage) -> RecordDict:
    """The site's local-only model, whole, in the transport dtype: only with the site's own consent."""
    if not shares_local_model(message.node_config, message.settings, message.site.name):
        message.log.warning("local-only model requested: refused: %s", NOT_CONSENTED)
        return refused_sharing(NOT_CONSENTED)
    loaded = message.site_round().baseline.load()
    if loaded is None:
        return refused_sharing("no local-only model: this site has not trained one in this run")
    message.log.info("local-only model sent for evaluation at the other consenting sites (site consent)")
    return RecordDict({Record.ARRAYS: encode(to_record(loaded[0]), message.settings.transport_dtype)})


def cross_evaluate_reply(message: SiteMessage) -> RecordDict:
    """Validate another consenting site's local-only model like the global model: aggregates only, none of the
    site's own kept models; refused without this site's consent."""
    if not shares_local_model(message.node_config, message.settings, message.site.name):
        k = ValidationPolicy.for_site(message.settings, message.node_config).min_report_cases
        return refused_cross_evaluation(NOT_CONSENTED, k)
    return evaluate_reply(message, relayed=True)


def evaluate_reply(message: SiteMessage, relayed: bool = False) -> RecordDict:
    """Validate the global model (`relayed`: the model the instruction carries, another site's local-only model)
    on the site's validation cases: aggregates, or none below the site's minimum."""
    policy = ValidationPolicy.for_site(message.settings, message.node_config)
    site, settings, log, server_round = message.site, message.settings, message.log, message.server_round
    k = policy.min_report_cases

    # A run outside the site's limits is refused before any case is loaded
    refused = refusal(site, settings, message.node_config, log)
    if refused:
        log.warning("round %d: validation refused: %s", server_round, refused)
        return refused_evaluation(refused)
    over_budget = spend_evaluation(site.work, message.run_id, server_round, site_limits(message.node_config))
    if over_budget:
        log.warning("round %d: validation refused: %s", server_round, over_budget)
        return refused_evaluation(over_budget)
    note_run_split_ignored(settings, policy.disclosure, log)
    work = message.site_round()
    model = (
        received_model(settings.model_preset, message.incoming)
        if relayed
        else work.personalized(message.incoming)  # with this site's norm layers under local-norm
    )

    # The data: the site's own validation set, or the set last reported while fewer than k cases changed
    cases = load_site_cases(site, settings.pipeline, policy.disclosure.validation_fraction, log)
    usable = released_set(site.work, VALIDATION, [i["case_id"] for i in cases.val], k)
    log.info("round %d: validation set: %s", server_round, usable.reason)
    if usable.cases is None:
        log.warning("round %d: validation suppressed: %s", server_round, usable.reason)
        return suppressed_content(policy, usable.reason)

    # Validate: per-case values stay here, in the work folder
    chosen = [item for item in cases.val if item["case_id"] in usable.cases]
    results, n_failed = validate_cases(
        model, chosen, settings.pipeline, policy.regions, work.device, log, settings.min_lesion_mm3
    )
    if not results:
        raise ValueError(f"none of the {len(chosen)} validation cases could be validated (see the site log)")
    if not relayed:
        keep_validation(site, settings, server_round, to_record(model), results)  # the model validated here
    final = released_set(site.work, VALIDATION, [r.case_id for r in results], k)
    if final.cases is None:
        log.warning("round %d: validation suppressed: %s", server_round, final.reason)
        return suppressed_content(policy, final.reason)

    # Aggregates of the released cases only (and those of the models kept here on the same cases)
    released = [r for r in results if r.case_id in final.cases]
    seed = bootstrap_seed(site_secret(site.work), sorted(final.cases))
    kept: list[KeptModel] = []
    items = [item for item in chosen if item["case_id"] in final.cases]
    if settings.local_baseline and len(released) >= k and not relayed:
        regions = dict(policy.regions)
        kept.append(KeptModel.local_only(validate_local_only(work, items, released, server_round, regions)))
    if settings.personalize_epochs > 0 and len(released) >= k and not relayed:
        kept.append(_personalized(message, work, policy, cases, model, items))
    content = evaluation_content(released, cases.n_skipped + n_failed, policy, seed, kept)
    status = content[Record.VALIDATION][Validation.STATUS]
    log.info(
        "round %d: validated %d cases (%s, minimum %d; %s)",
        server_round,
        len(released),
        status,
        k,
        final.reason,
    )
    if content.metric_records:
        record_released(site.work, VALIDATION, final.cases)
    return content


def _personalized(
    message: SiteMessage,
    work: SiteRound,
    policy: ValidationPolicy,
    cases: SiteCases,
    model: torch.nn.Module,
    items: list[dict[str, object]],
) -> KeptModel:
    """The personalized model's results on the released validation cases, fine-tuned on the released training set
    (the set the site trains on, R6); none before the first round or without enough training cases."""
    if message.server_round == 0:
        return KeptModel.personalized(None, "round 0 validates the initial model; nothing to personalize yet")
    minimum = policy.disclosure.min_train_cases
    usable = released_set(message.site.work, TRAINING, [i["case_id"] for i in cases.train], minimum)
    train_items = [
        item for item in cases.train if usable.cases is not None and item["case_id"] in usable.cases
    ]
    if len(train_items) < minimum:
        return KeptModel.personalized(None, usable.reason if usable.cases is None else f"n < {minimum}")
    regions = dict(policy.regions)
    return KeptModel.personalized(
        validate_personalized(work, model, train_items, items, message.server_round, regions)
    )


def _declined(message: SiteMessage, reason: str, policy: DisclosurePolicy) -> RecordDict:
    message.log.warning("round %d: training declined: %s", message.server_round, reason)
    return declined_training(reason, policy)
