"""The replies a site sends when its policy stops a round: refused (run outside its limits) and declined (too few
training cases). Neither carries a number about a case; both name the rule, and the site log says the same."""

from collections.abc import Mapping
from logging import Logger

from flwr.app import ConfigRecord, RecordDict

from models.shared.wire import DECLINED, REFUSED, Record, Training
from site_app.disclosure.policy import DisclosurePolicy
from site_app.learning.site_data import site_inventory
from site_app.settings.limits import OutsideSiteLimits, SiteLimits, check_resampled_size, check_run_settings
from site_app.settings.node_config import SitePaths
from site_app.settings.run_settings import SiteRunSettings


def refusal(
    site: SitePaths, settings: SiteRunSettings, node_config: Mapping[str, object], log: Logger
) -> str | None:
    """Why this run is outside the site's limits (site_app.settings.limits), or None; checked before any case is
    preprocessed, so a refused run writes nothing to the cache."""
    limits = SiteLimits.from_node_config(node_config)
    try:
        check_run_settings(settings, limits)
        check_resampled_size(site_inventory(site, log), settings, limits)
    except OutsideSiteLimits as error:
        return str(error)
    return None


def refused_training(reason: str) -> RecordDict:
    """A train reply without weights for a run outside the site's limits (site_app.settings.limits)."""
    return RecordDict({Record.TRAINING: ConfigRecord({Training.STATUS: REFUSED, Training.REASON: reason})})


def declined_training(reason: str, policy: DisclosurePolicy) -> RecordDict:
    """A train reply without weights, loss or case count (disclosure policy R6c, R7)."""
    return RecordDict(
        {
            Record.TRAINING: ConfigRecord(
                {
                    Training.STATUS: DECLINED,
                    Training.REASON: reason,
                    Training.MIN_TRAIN_CASES: policy.min_train_cases,
                }
            )
        }
    )


def note_run_split_ignored(settings: SiteRunSettings, policy: DisclosurePolicy, log: Logger) -> None:
    """The site log says that the run's seed does not choose the validation cases (R6a); the run config has no
    setting that does."""
    log.info(
        "the run's seed (%d) is not used to choose validation cases: this site validates on its own fixed split"
        " (validation-fraction %g)",
        settings.seed,
        policy.validation_fraction,
    )
