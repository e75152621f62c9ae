"""MONAI dictionary transform pipelines: a deterministic, cacheable prefix and the random training tail.

Every item is a dict with "image" and "label" (filled by LoadCased from the case's files). After the
prefix both are channel-first MetaTensors (1, X, Y, Z) in RAS orientation at `spacing_mm` isotropic,
cropped to the head; the image is z-scored over the head.
"""

import hashlib
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    MapTransform,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SelectItemsd,
    Spacingd,
    SpatialPadd,
)

from data_prep.discovery import CaseFiles
from data_prep.ingest_settings import IngestSettings
from data_prep.intensity import ZScoreOverHeadd, head_mask
from data_prep.loading import load_case


def case_item(case: CaseFiles, settings: "PipelineSettings", ingest: IngestSettings) -> dict[str, object]:
    """A picklable dataset item; its hash (the cache key) covers the files' contents and every setting.

    Hashing reads each file once (about 1 GB/s); a changed file gets a new key, an untouched one keeps its entry
    whatever its modification time. Raises OSError when a file cannot be read (the caller skips the case).
    """
    return {
        "case_id": case.case_id,
        "image_files": [str(f) for f in case.image],
        "label_file": str(case.label),
        "image_format": case.image_format,
        "label_format": case.label_format,
        "modality": case.modality,
        "content": [file_digest(f) for f in (*case.image, case.label)],
        "ingest": ingest.as_dict(),
        "preprocess": settings.cache_key,
    }


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def case_from_item(item: Mapping[Hashable, object]) -> CaseFiles:
    """Inverse of case_item."""
    return CaseFiles(
        case_id=str(item["case_id"]),
        image=tuple(Path(f) for f in item["image_files"]),  # type: ignore[union-attr]
        label=Path(str(item["label_file"])),
        image_format=item["image_format"],  # type: ignore[arg-type]
        label_format=item["label_format"],  # type: ignore[arg-type]
        modality=item["modality"],  # type: ignore[arg-type]
    )


class LoadCased(MapTransform):
    """Read a case's image and label from the file references in the item into RAS MetaTensors."""

    def __init__(self) -> None:
        super().__init__(keys=("image", "label"))

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        image, label = load_case(case_from_item(d), IngestSettings.from_dict(d["ingest"]))  # type: ignore[arg-type]
        d["image"] = MetaTensor(torch.as_tensor(image.array, dtype=torch.float32)[None], affine=image.affine)
        d["label"] = MetaTensor(torch.as_tensor(label.array.astype(np.uint8))[None], affine=label.affine)
        return d


@dataclass(frozen=True)
class PipelineSettings:
    """Preprocessing settings from the run config; `cache_key` ties cached volumes to them."""

    spacing_mm: float
    patch_size: int
    samples_per_case: int

    @property
    def cache_key(self) -> str:
        return f"v2-spacing={self.spacing_mm}-pad={self.patch_size}"


INTERPOLATION = {"image": "bilinear", "label": "nearest"}
"""Resampling mode per key: intensities are interpolated, label values never are."""


def preprocessing_steps(
    settings: PipelineSettings, keys: tuple[str, ...] = ("image", "label")
) -> list[tuple[type[MapTransform], dict[str, object]]]:
    """The deterministic prefix after loading, as (transform class, arguments): RAS → isotropic spacing → crop to
    the head → z-score → pad to a patch. ``preprocess`` and ``image_preprocess`` build it, and ``oncofed export``
    writes the same steps into a MONAI bundle's inference config, so every path preprocesses alike."""
    return [
        (Orientationd, {"keys": keys, "axcodes": "RAS", "labels": (("L", "R"), ("P", "A"), ("I", "S"))}),
        (
            Spacingd,
            {
                "keys": keys,
                "pixdim": (settings.spacing_mm,) * 3,
                "mode": tuple(INTERPOLATION[k] for k in keys),
            },
        ),
        (
            CropForegroundd,
            {"keys": keys, "source_key": "image", "select_fn": head_mask, "margin": 2, "allow_smaller": True},
        ),
        (ZScoreOverHeadd, {"keys": "image"}),
        (SpatialPadd, {"keys": keys, "spatial_size": (settings.patch_size,) * 3, "mode": "constant"}),
    ]


def preprocess(settings: PipelineSettings) -> Compose:
    """Deterministic prefix: load → RAS → isotropic spacing → crop to head → z-score → pad to a patch."""
    return Compose(
        [
            LoadCased(),
            *(step(**arguments) for step, arguments in preprocessing_steps(settings)),
            EnsureTyped(keys="label", dtype=torch.uint8),
        ]
    )


def image_preprocess(settings: PipelineSettings) -> Compose:
    """The same prefix for an image alone (prediction), applied to {"image": MetaTensor (1, X, Y, Z)} already read."""
    return Compose([step(**arguments) for step, arguments in preprocessing_steps(settings, ("image",))])


def training(settings: PipelineSettings, seed: int) -> Compose:
    """Prefix + random patches (half centred on tumor) and light augmentation; items keep only image and label."""
    keys = ("image", "label")
    pipeline = Compose(
        [
            *preprocess(settings).transforms,
            RandCropByPosNegLabeld(
                keys=keys,
                label_key="label",
                spatial_size=(settings.patch_size,) * 3,
                pos=1,
                neg=1,
                num_samples=settings.samples_per_case,
            ),
            RandFlipd(keys=keys, prob=0.5, spatial_axis=0),  # left-right: anatomically plausible
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
            SelectItemsd(
                keys=keys
            ),  # the case's file references (lists, None) do not batch, and are not needed
        ]
    )
    pipeline.set_random_state(seed=seed)
    return pipeline
