"""The replies a site sends when its policy stops a round: refused (train or evaluate: a run outside its limits)
and declined (train: too few training cases). Neither carries a number about a case; both name the rule in typed fields (models.shared.wire:
Status, OutsideLimit, Training.MIN_TRAIN_CASES) with a sentence for people, and the site log says the same."""

from collections.abc import Mapping
from logging import Logger

from flwr.app import ConfigRecord, RecordDict

from models.shared.wire import Record, Status, Training, Validation
from site_app.disclosure.policy import DisclosurePolicy, deployed
from site_app.learning.site_data import site_inventory
from site_app.settings.identity import SitePaths
from site_app.settings.limits import (
    OutsideSiteLimits,
    SiteLimits,
    check_local_steps,
    check_resampled_size,
    check_run_settings,
)
from site_app.settings.run_settings import SiteRunSettings


def refusal(
    site: SitePaths, settings: SiteRunSettings, node_config: Mapping[str, object], log: Logger
) -> OutsideSiteLimits | None:
    """Why this run is outside the site's limits (site_app.settings.limits), or None; checked before any case is
    preprocessed, so a refused run writes nothing to the cache."""
    limits = site_limits(node_config)
    try:
        check_run_settings(settings, limits)
        check_resampled_size(site_inventory(site, log), settings, limits)
    except OutsideSiteLimits as error:
        return error
    return None


def too_few_local_steps(
    settings: SiteRunSettings, node_config: Mapping[str, object], n_training_cases: int
) -> OutsideSiteLimits | None:
    """Why a round on `n_training_cases` cases would take fewer optimizer steps than the site's local-steps-min
    (site_app.settings.limits), or None; checked once the training set is known, before training."""
    try:
        check_local_steps(settings, n_training_cases, site_limits(node_config))
    except OutsideSiteLimits as error:
        return error
    return None


def site_limits(node_config: Mapping[str, object]) -> SiteLimits:
    """A deployed site's limits from its node config; a simulated site's (SiteLimits.simulated)."""
    return SiteLimits.from_node_config(node_config) if deployed(node_config) else SiteLimits.simulated()


def refused_training(refused: OutsideSiteLimits) -> RecordDict:
    """A train reply without weights for a run outside the site's limits, naming the setting and the limit."""
    fields = {Training.STATUS: Status.REFUSED, Training.REASON: str(refused), **refused.outside.fields()}
    return RecordDict({Record.TRAINING: ConfigRecord(fields)})


def refused_evaluation(refused: OutsideSiteLimits) -> RecordDict:
    """An evaluate reply for a run outside the site's limits, naming the setting and the limit: nothing was
    validated."""
    fields = {Validation.STATUS: Status.REFUSED, Validation.REASON: str(refused), **refused.outside.fields()}
    return RecordDict({Record.VALIDATION: ConfigRecord(fields)})


def declined_training(reason: str, policy: DisclosurePolicy) -> RecordDict:
    """A train reply without weights, loss or case count (disclosure policy R6c, R7), with the site's minimum."""
    fields = {
        Training.STATUS: Status.DECLINED,
        Training.REASON: reason,
        Training.MIN_TRAIN_CASES: policy.min_train_cases,
    }
    return RecordDict({Record.TRAINING: ConfigRecord(fields)})


def note_run_split_ignored(settings: SiteRunSettings, policy: DisclosurePolicy, log: Logger) -> None:
    """The site log says that the run's seed does not choose the validation cases (R6a); the run config has no
    setting that does."""
    log.info(
        "the run's seed (%d) is not used to choose validation cases: this site validates on its own fixed split"
        " (validation-fraction %g)",
        settings.seed,
        policy.validation_fraction,
    )
