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
from data_prep.loading import load_case

HEAD_FRACTION = 0.1
"""A voxel belongs to the head when above 10 % of the robust (1st–99th percentile) intensity range."""


def head_mask(image: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Foreground (head) mask: robust to scanner scale/offset and to background noise."""
    values = (
        image.flatten().float()
        if isinstance(image, torch.Tensor)
        else torch.as_tensor(image).flatten().float()
    )
    lo, hi = torch.quantile(values[:: max(1, values.numel() // 200_000)], torch.tensor([0.01, 0.99]))
    return image > lo + HEAD_FRACTION * (hi - lo)


def zscore_over_head(image: torch.Tensor) -> torch.Tensor:
    """Z-score with mean and SD taken over the head only, so air does not dilute the statistics."""
    mask = head_mask(image)
    inside = image[mask].float()
    if inside.numel() < 2:
        raise ValueError("image has no foreground above the background level (constant or empty volume)")
    std = inside.std()
    if not torch.isfinite(std) or std == 0:
        raise ValueError("image intensities are constant or not finite over the head")
    return (image - inside.mean()) / std


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


class ZScoreOverHeadd(MapTransform):
    """Dictionary wrapper of zscore_over_head."""

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = zscore_over_head(d[key])
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


def preprocess(settings: PipelineSettings) -> Compose:
    """Deterministic prefix: load → RAS → isotropic spacing → crop to head → z-score → pad to a patch."""
    keys = ("image", "label")
    return Compose(
        [
            LoadCased(),
            Orientationd(keys=keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            Spacingd(keys=keys, pixdim=(settings.spacing_mm,) * 3, mode=("bilinear", "nearest")),
            CropForegroundd(keys=keys, source_key="image", select_fn=head_mask, margin=2, allow_smaller=True),
            ZScoreOverHeadd(keys="image"),
            SpatialPadd(keys=keys, spatial_size=(settings.patch_size,) * 3, mode="constant"),
            EnsureTyped(keys="label", dtype=torch.uint8),
        ]
    )


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
