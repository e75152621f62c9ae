"""The preprocessing cache key: derived from every field of PreprocessSettings (a field added later is covered
by construction), and a cache entry written under one setting is never read back under another."""

import dataclasses

import numpy as np
import pytest
import torch
from corpus_builder import phantom, write_nifti_case

from data_prep.dataset import SiteCache
from data_prep.discovery import discover_cases
from data_prep.ingest_settings import DEFAULT_INGEST
from data_prep.transforms import PipelineSettings, PreprocessSettings, case_item, preprocess

BASE = PreprocessSettings(spacing_mm=4.0, pad_to=16)
AIR_VOXELS = 8


def changed(value: object) -> object:
    """Another valid value of the same type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, tuple):
        return (changed(value[0]), *value[1:])
    raise AssertionError(f"teach changed() to alter a {type(value).__name__} setting")


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(PreprocessSettings)])
def test_changing_any_single_setting_changes_the_key(field):
    other = dataclasses.replace(BASE, **{field: changed(getattr(BASE, field))})
    assert other != BASE
    assert other.cache_key != BASE.cache_key


def test_equal_settings_give_equal_keys_and_the_key_is_a_sha256():
    assert PreprocessSettings(spacing_mm=4.0, pad_to=16).cache_key == BASE.cache_key
    assert len(BASE.cache_key) == 64 and int(BASE.cache_key, 16) >= 0


def test_run_config_settings_reach_the_key_but_samples_per_case_does_not():
    """samples_per_case only changes the random patches drawn after the cache."""
    base = PipelineSettings(spacing_mm=2.0, patch_size=32, samples_per_case=2)
    keys = {
        name: dataclasses.replace(base, **{name: changed(getattr(base, name))}).preprocessing.cache_key
        for name in ("spacing_mm", "patch_size", "samples_per_case")
    }
    assert keys["spacing_mm"] != base.preprocessing.cache_key
    assert keys["patch_size"] != base.preprocessing.cache_key
    assert keys["samples_per_case"] == base.preprocessing.cache_key


def test_invalid_settings_are_refused_naming_the_setting():
    with pytest.raises(ValueError, match="head_fraction"):
        dataclasses.replace(BASE, head_fraction=1.5)
    with pytest.raises(ValueError, match="spacing"):
        dataclasses.replace(BASE, spacing_mm=0.0)


@pytest.fixture(scope="module")
def tiny_case(tmp_path_factory):
    """A tiny head with air around it, so that the crop margin is not cut off by the volume's edge."""
    site, truth = tmp_path_factory.mktemp("site"), phantom(0)
    air = float(truth.image.array.min())
    image = np.pad(truth.image.array, AIR_VOXELS, constant_values=air)
    write_nifti_case(site, "case-1", 0, image=image, label=np.pad(truth.label.array, AIR_VOXELS))
    return discover_cases(site)[0]


def cached(case, settings: PreprocessSettings, cache) -> dict:
    return SiteCache(
        [case_item(case, settings, DEFAULT_INGEST)], transform=preprocess(settings), cache_dir=cache
    )[0]


@pytest.mark.parametrize(
    "change", [{"crop_margin_voxels": 6}, {"head_fraction": 0.4}], ids=["crop-margin", "head-fraction"]
)
def test_a_cache_written_with_one_setting_is_not_read_back_after_changing_another(
    tiny_case, tmp_path, change
):
    cache = tmp_path / "cache"
    first = cached(tiny_case, BASE, cache)
    other = dataclasses.replace(BASE, **change)
    second = cached(tiny_case, other, cache)
    fresh = preprocess(other)(case_item(tiny_case, other, DEFAULT_INGEST))  # no cache involved
    assert second["image"].shape != first["image"].shape or not torch.equal(second["image"], first["image"])
    assert second["image"].shape == fresh["image"].shape and torch.equal(second["image"], fresh["image"])
    assert torch.equal(second["label"], fresh["label"])
    assert len(list(cache.iterdir())) == 2  # one entry per setting

    again = cached(tiny_case, BASE, cache)  # unchanged settings read their own entry back
    assert torch.equal(again["image"], first["image"]) and len(list(cache.iterdir())) == 2
