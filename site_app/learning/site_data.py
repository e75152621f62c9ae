"""A site's usable cases, split into training and validation, with failures logged locally.

The split is the site's own (site_app.disclosure.validation_split): made once, stored in the work folder, reused by every
run; the coordinator's run config does not change it. The site inventory (``<work>/inventory.json``, written by
``oncofed site check``) decides which cases are used: only those that passed. It is keyed by the data folder and
the ingest settings: in deployment the settings are site.toml's [series], [labels] and [limits] (node config
`site-config`), and an inventory built for another data folder or other settings (site.toml edited after
`site check`, or check skipped) is rebuilt before the round, with the reason in the site log. In simulation there
is no site.toml: the previous inventory's settings or the defaults. A case that fails later (file changed or
vanished) is skipped with its reason in the site log and the round goes on.
"""

from dataclasses import dataclass
from logging import Logger
from pathlib import Path

from data_prep.dataset import usable_items
from data_prep.discovery import discover
from data_prep.ingest_settings import IngestSettings
from data_prep.inventory import Inventory, build_inventory, read_inventory, site_aggregate, write_inventory
from data_prep.transforms import PipelineSettings
from site_app.disclosure.policy import released_overview
from site_app.disclosure.validation_split import SiteSplit, site_split
from site_app.settings.identity import SitePaths
from site_app.settings.site_file import read_site_settings


@dataclass(frozen=True)
class SiteCases:
    """Dataset items (see data_prep.transforms.case_item) that preprocessed cleanly."""

    train: list[dict[str, object]]
    val: list[dict[str, object]]
    n_skipped: int


def site_inventory(site: SitePaths, log: Logger) -> Inventory:
    """The site's inventory from its work folder; built and written there when missing, for another folder, or
    for other settings than site.toml's."""
    inventory = read_inventory(site.work)
    wanted = read_site_settings(site.settings_file) if site.settings_file is not None else None
    if inventory is None:
        reason = f"no inventory.json in {site.work}"
    elif Path(inventory.data).resolve() != site.data.resolve():
        reason = f"the inventory in {site.work} is of {inventory.data}"
    elif wanted is not None and inventory.settings.as_dict() != wanted.as_dict():
        reason = f"{site.settings_file}'s [series], [labels] or [limits] differ from the inventory's"
    else:
        return inventory
    settings = wanted or (inventory.settings if inventory is not None else IngestSettings())
    log.info("building the site inventory of %s (%s)", site.data, reason)
    inventory = build_inventory(discover(site.data, settings), site.data, settings)
    write_inventory(inventory, site.work)
    for case in inventory.cases:
        if case.status == "excluded":
            log.warning("case %s excluded: %s", case.case_id, case.reason)
    return inventory


def site_overview(site: SitePaths, k: int, log: Logger) -> dict[str, int]:
    """The aggregate that may leave the site once per run: case counts, each 0 or at least k; no ranges
    (disclosure policy R2, R8)."""
    return released_overview(site_aggregate(site_inventory(site, log)), k)


def split_inventory(
    site: SitePaths, validation_fraction: float | None, log: Logger
) -> tuple[Inventory, SiteSplit]:
    """The inventory and the site's own split of its usable cases (nothing preprocessed yet)."""
    inventory = site_inventory(site, log)
    ids = [case.case_id for case in inventory.usable_cases()]
    return inventory, site_split(site.work, ids, validation_fraction, log)


def load_site_cases(
    site: SitePaths, settings: PipelineSettings, validation_fraction: float | None, log: Logger
) -> SiteCases:
    """Usable cases of the inventory, split by the site's own split (a case failing later never reshuffles it),
    preprocessed through the cache; cases failing now are skipped with a logged reason."""
    inventory, split = split_inventory(site, validation_fraction, log)
    return preprocessed_cases(site, inventory, split, settings, log)


def preprocessed_cases(
    site: SitePaths, inventory: Inventory, split: SiteSplit, settings: PipelineSettings, log: Logger
) -> SiteCases:
    """The cases of a split (from split_inventory), preprocessed through the cache; cases failing now are
    skipped with a logged reason."""
    by_id = {case.case_id: case for case in inventory.usable_cases()}
    train_cases = [by_id[case] for case in split.training]
    val_cases = [by_id[case] for case in split.validation]
    cache = site.work / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    train, skipped_train = usable_items(train_cases, settings, cache, inventory.settings)
    val, skipped_val = usable_items(val_cases, settings, cache, inventory.settings)
    for case_id, reason in skipped_train + skipped_val:
        log.warning("case %s skipped: %s", case_id, reason)
    if not train or not val:
        raise ValueError(
            f"site {site.name!r} has {len(train)} usable training and {len(val)} usable validation cases;"
            " at least one of each is needed (see the site log for skipped cases)"
        )
    log.info(
        "%d training and %d validation cases usable, %d skipped",
        len(train),
        len(val),
        len(skipped_train) + len(skipped_val),
    )
    return SiteCases(train=train, val=val, n_skipped=len(skipped_train) + len(skipped_val))
