"""A site's cases as train/validation datasets backed by an on-disk cache in the site's work folder."""

import logging
from collections.abc import Sequence
from pathlib import Path

from monai.data import Dataset, PersistentDataset
from sklearn.model_selection import train_test_split

from data_prep.discovery import CaseFiles
from data_prep.transforms import PipelineSettings, case_item, preprocess, training

log = logging.getLogger(__name__)


def split_cases(
    cases: Sequence[CaseFiles], val_fraction: float, seed: int
) -> tuple[list[CaseFiles], list[CaseFiles]]:
    """Deterministic train/validation split: same cases and seed give the same split on every round."""
    ordered = sorted(cases, key=lambda c: c.case_id)
    if len(ordered) < 2:
        raise ValueError(f"a site needs at least 2 usable cases to train and validate, found {len(ordered)}")
    n_val = min(len(ordered) - 1, max(1, round(len(ordered) * val_fraction)))
    train, val = train_test_split(ordered, test_size=n_val, random_state=seed, shuffle=True)
    return sorted(train, key=lambda c: c.case_id), sorted(val, key=lambda c: c.case_id)


def usable_items(
    cases: Sequence[CaseFiles], settings: PipelineSettings, cache_dir: Path
) -> tuple[list[dict[str, object]], list[tuple[str, str]]]:
    """Preprocess (or find in the cache) every case; a case that fails is set aside with its reason.

    Returns the usable items and (case_id, reason) for each case left out. One bad case never stops a site.
    """
    items = [case_item(case, settings) for case in cases]
    cached = PersistentDataset(items, transform=preprocess(settings), cache_dir=cache_dir)
    usable, skipped = [], []
    for index, item in enumerate(items):
        try:
            cached[index]
        except Exception as error:  # noqa: BLE001 - any failure of one case is recorded, not fatal
            cause = error.__cause__ or error
            skipped.append((str(item["case_id"]), f"{type(cause).__name__}: {cause}"))
            continue
        usable.append(item)
    return usable, skipped


def training_dataset(items: list[dict[str, object]], settings: PipelineSettings, cache_dir: Path, seed: int) -> Dataset:
    """Cached prefix + random patches; each item yields `samples_per_case` patches."""
    return PersistentDataset(items, transform=training(settings, seed), cache_dir=cache_dir)


def validation_dataset(items: list[dict[str, object]], settings: PipelineSettings, cache_dir: Path) -> Dataset:
    """Whole preprocessed volumes, from the cache."""
    return PersistentDataset(items, transform=preprocess(settings), cache_dir=cache_dir)
