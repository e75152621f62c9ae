"""A site's cases as train/validation datasets backed by an on-disk cache in the site's work folder.

Cache entries are ``<cache>/<key>.pt``, key = hash of the dataset item, which holds the SHA-256 of every source
file and every reading and preprocessing setting (transforms.case_item): a changed source file or setting gets a
new entry, and an entry that cannot be loaded (truncated, corrupt) is deleted and rebuilt.
"""

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.data import Dataset, PersistentDataset
from monai.data.utils import json_hashing
from monai.transforms import Compose
from monai.utils import convert_to_tensor

from data_prep.discovery import CaseFiles
from data_prep.ingest_settings import DEFAULT_INGEST, IngestSettings
from data_prep.transforms import PipelineSettings, case_item, preprocess, training
from models.shared.atomic import atomic_path

log = logging.getLogger(__name__)


class SiteCache(PersistentDataset):
    """MONAI's PersistentDataset with two changes: any unreadable entry is rebuilt (MONAI re-raises most load
    errors), and entries are written atomically in the cache folder itself (models.shared.atomic; MONAI writes in
    the system temp folder and moves, which is a copy, not atomic, when that is another file system).

    Keys hash the item as sorted JSON: MONAI's default pickle hash depends on which equal strings are the same
    object, so an item rebuilt from inventory.json would miss its entry."""

    def __init__(self, data: Sequence[dict[str, object]], transform: Compose, cache_dir: Path) -> None:
        super().__init__(data, transform=transform, cache_dir=cache_dir, hash_func=json_hashing)

    def _cachecheck(self, item_transformed):
        entry = (
            Path(self.cache_dir)
            / f"{self.hash_func(item_transformed).decode('utf-8')}{self.transform_hash}.pt"
        )
        if entry.is_file():
            try:
                return torch.load(entry, weights_only=True)
            except Exception as e:  # noqa: BLE001 - whatever is wrong with the entry, recomputing fixes it
                log.warning(
                    "cache entry %s cannot be loaded (%s: %s); rebuilding it",
                    entry.name,
                    type(e).__name__,
                    str(e).split("\n", 1)[0],
                )
                entry.unlink(missing_ok=True)
        transformed = self._pre_transform(dict(item_transformed))
        # plain tensors, as MONAI stores them: loadable with weights_only=True (MetaTensor metadata is not)
        with atomic_path(entry) as tmp:
            torch.save(convert_to_tensor(transformed, convert_numeric=False, track_meta=self.track_meta), tmp)
        return transformed


def usable_items(
    cases: Sequence[CaseFiles],
    settings: PipelineSettings,
    cache_dir: Path,
    ingest: IngestSettings = DEFAULT_INGEST,
) -> tuple[list[dict[str, object]], list[tuple[str, str]]]:
    """Preprocess (or find in the cache) every case; a case that fails is set aside with its reason.

    Returns the usable items and (case_id, reason) for each case left out (a file vanished, changed into something
    unreadable, ...). One bad case never stops a site.
    """
    items, skipped = [], []
    for case in cases:
        try:
            items.append(case_item(case, settings.preprocessing, ingest))
        except OSError as e:
            skipped.append((case.case_id, f"cannot read {e.filename}: {e.strerror}"))
    cached = SiteCache(items, transform=preprocess(settings.preprocessing), cache_dir=cache_dir)
    usable = []
    for index, item in enumerate(items):
        try:
            cached[index]
        except Exception as error:  # noqa: BLE001 - any failure of one case is recorded, not fatal
            cause = error.__cause__ or error
            skipped.append((str(item["case_id"]), f"{type(cause).__name__}: {cause}"))
            continue
        usable.append(item)
    return usable, skipped


def training_dataset(
    items: list[dict[str, object]], settings: PipelineSettings, cache_dir: Path, seed: int
) -> Dataset:
    """Cached prefix + random patches; each item yields `samples_per_case` patches."""
    return SiteCache(items, transform=training(settings, seed), cache_dir=cache_dir)
