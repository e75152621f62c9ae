"""The replies a site sends when its policy stops a round: refused (run outside its limits) and declined (too few
training cases). Neither carries a number about a case; both name the rule, and the site log says the same."""

from logging import Logger

from flwr.app import ConfigRecord, RecordDict

from models.disclosure_wire import (
    DECLINED,
    MIN_TRAIN_CASES,
    REASON_KEY,
    REFUSED,
    STATUS_KEY,
    TRAINING_RECORD,
)
from site_app.disclosure_policy import DisclosurePolicy
from site_app.run_settings import SiteRunSettings
from site_app.site_config import SitePaths
from site_app.site_data import site_inventory
from site_app.site_limits import OutsideSiteLimits, SiteLimits, check_resampled_size, check_run_settings


def refusal(site: SitePaths, settings: SiteRunSettings, node_config: dict, log: Logger) -> str | None:
    """Why this run is outside the site's limits (site_app.site_limits), or None; checked before any case is
    preprocessed, so a refused run writes nothing to the cache."""
    limits = SiteLimits.from_node_config(node_config)
    try:
        check_run_settings(settings, limits)
        check_resampled_size(site_inventory(site, log), settings, limits)
    except OutsideSiteLimits as error:
        return str(error)
    return None


def refused_training(reason: str) -> RecordDict:
    return RecordDict({TRAINING_RECORD: ConfigRecord({STATUS_KEY: REFUSED, REASON_KEY: reason})})


def declined_training(reason: str, policy: DisclosurePolicy) -> RecordDict:
    """A train reply without weights, loss or case count (disclosure policy R6c, R7)."""
    return RecordDict(
        {
            TRAINING_RECORD: ConfigRecord(
                {STATUS_KEY: DECLINED, REASON_KEY: reason, MIN_TRAIN_CASES: policy.min_train_cases}
            )
        }
    )


def note_run_split_ignored(settings: SiteRunSettings, policy: DisclosurePolicy, log: Logger) -> None:
    """The site log says that the run's val-fraction and seed do not choose the validation cases (R6a)."""
    log.info(
        "the run's val-fraction (%g) and seed (%d) are not used to choose validation cases: this site validates"
        " on its own fixed split (validation-fraction %g)",
        settings.val_fraction,
        settings.seed,
        policy.validation_fraction,
    )
