"""A site's usable cases, split into training and validation, with failures logged locally."""

from dataclasses import dataclass
from logging import Logger

from data_prep.dataset import split_cases, usable_items
from data_prep.discovery import discover_cases
from data_prep.transforms import PipelineSettings
from site_app.site_config import SitePaths


@dataclass(frozen=True)
class SiteCases:
    """Dataset items (see data_prep.transforms.case_item) that preprocessed cleanly."""

    train: list[dict[str, object]]
    val: list[dict[str, object]]
    n_skipped: int


def load_site_cases(site: SitePaths, settings: PipelineSettings, val_fraction: float, seed: int,
                    log: Logger) -> SiteCases:
    """Discover, split (on all discovered cases, so a failing case never reshuffles the split), preprocess."""
    cases = discover_cases(site.data)
    train_cases, val_cases = split_cases(cases, val_fraction=val_fraction, seed=seed)
    cache = site.work / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    train, skipped_train = usable_items(train_cases, settings, cache)
    val, skipped_val = usable_items(val_cases, settings, cache)
    for case_id, reason in skipped_train + skipped_val:
        log.warning("case %s skipped: %s", case_id, reason)
    if not train or not val:
        raise ValueError(f"site {site.name!r} has {len(train)} usable training and {len(val)} usable validation cases;"
                         " at least one of each is needed (see the site log for skipped cases)")
    log.info("%d training and %d validation cases usable, %d skipped", len(train), len(val),
             len(skipped_train) + len(skipped_val))
    return SiteCases(train=train, val=val, n_skipped=len(skipped_train) + len(skipped_val))
