"""MONAI dictionary transform pipelines: a deterministic, cacheable prefix and the random training tail.

Every item is a dict with "image" and "label" (filled by LoadCased from the case's files). After the
prefix both are channel-first MetaTensors (1, X, Y, Z) in RAS orientation at `spacing_mm` isotropic,
cropped to the head; the image is z-scored over the head. The prefix is built from PreprocessSettings only, and
its cache key hashes every field of it: a setting that changes the cached output is a field there.
"""

import dataclasses
import hashlib
import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from functools import cache, partial
from importlib.metadata import version
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

PREPROCESS_LIBRARIES = ("monai", "torch")
"""Their versions are part of every cache key too: an upgrade may change what the same settings produce."""


@dataclass(frozen=True)
class PreprocessSettings:
    """Every setting of the deterministic, cached prefix (see preprocess), which is built from these fields only.

    `cache_key` hashes all fields, so a setting that changes the prefix's output belongs here and is covered
    without anyone bumping a version by hand. Spacing and padding come from the run config; the rest are the
    project's fixed choices, named so they are part of the key.
    """

    spacing_mm: float
    """Isotropic voxel size after resampling (mm)."""
    pad_to: int
    """Each axis is padded to at least this many voxels (the training patch size)."""
    orientation: str = "RAS"
    """Axis codes of the resampled grid (voxel axes point to Right, Anterior, Superior)."""
    image_interpolation: str = "bilinear"
    label_interpolation: str = "nearest"
    head_fraction: float = 0.1
    """A voxel belongs to the head when above this fraction of the robust intensity range (head_quantiles)."""
    head_quantiles: tuple[float, float] = (0.01, 0.99)
    """The robust intensity range: these quantiles of the volume."""
    head_quantile_samples: int = 200_000
    """The quantiles are taken over about this many evenly strided voxels (exact quantiles are slow)."""
    crop_margin_voxels: int = 2
    """Voxels kept around the head's bounding box when cropping."""
    crop_allow_smaller: bool = True
    """A margin reaching past the volume's edge is cut at the edge (True) or padded out (False)."""
    pad_mode: str = "constant"
    """How padding to pad_to is filled (constant: zeros, the head's mean after the z-score)."""
    image_dtype: str = "float32"
    label_dtype: str = "uint8"

    def __post_init__(self) -> None:
        if not self.spacing_mm > 0:
            raise ValueError(f"spacing must be positive, got {self.spacing_mm} mm")
        if self.pad_to < 1:
            raise ValueError(f"pad_to must be at least 1 voxel, got {self.pad_to}")
        if not 0 < self.head_fraction < 1:
            raise ValueError(f"head_fraction must be between 0 and 1, got {self.head_fraction}")
        low, high = self.head_quantiles
        if not 0 <= low < high <= 1:
            raise ValueError(f"head_quantiles must be 0 <= low < high <= 1, got {self.head_quantiles}")

    @property
    def cache_key(self) -> str:
        """SHA-256 (hex) of the canonical JSON of every field."""
        canonical = json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def head_mask(image: np.ndarray | torch.Tensor, settings: PreprocessSettings) -> np.ndarray | torch.Tensor:
    """Foreground (head) mask: robust to scanner scale/offset and to background noise."""
    values = (
        image.flatten().float()
        if isinstance(image, torch.Tensor)
        else torch.as_tensor(image).flatten().float()
    )
    stride = max(1, values.numel() // settings.head_quantile_samples)
    lo, hi = torch.quantile(values[::stride], torch.tensor(settings.head_quantiles))
    return image > lo + settings.head_fraction * (hi - lo)


def zscore_over_head(image: torch.Tensor, settings: PreprocessSettings) -> torch.Tensor:
    """Z-score with mean and SD taken over the head only, so air does not dilute the statistics."""
    mask = head_mask(image, settings)
    inside = image[mask].float()
    if inside.numel() < 2:
        raise ValueError("image has no foreground above the background level (constant or empty volume)")
    std = inside.std()
    if not torch.isfinite(std) or std == 0:
        raise ValueError("image intensities are constant or not finite over the head")
    return (image - inside.mean()) / std


def case_item(case: CaseFiles, settings: PreprocessSettings, ingest: IngestSettings) -> dict[str, object]:
    """A picklable dataset item; its hash (the cache key) covers the files' contents, every reading and
    preprocessing setting and the versions of the libraries that preprocess.

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
        "software": dict(library_versions()),
    }


@cache
def library_versions() -> tuple[tuple[str, str], ...]:
    """(name, version) of each of PREPROCESS_LIBRARIES."""
    return tuple((name, version(name)) for name in PREPROCESS_LIBRARIES)


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

    def __init__(self, keys: str, settings: PreprocessSettings) -> None:
        super().__init__(keys=keys)
        self.settings = settings

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = zscore_over_head(d[key], self.settings)
        return d


@dataclass(frozen=True)
class PipelineSettings:
    """The data pipeline's settings from the run config: the cached prefix's and the training tail's."""

    spacing_mm: float
    patch_size: int
    samples_per_case: int

    @property
    def preprocessing(self) -> PreprocessSettings:
        """The cached prefix's settings (samples_per_case only shapes the random tail, never the cache)."""
        return PreprocessSettings(spacing_mm=float(self.spacing_mm), pad_to=int(self.patch_size))


def preprocess(settings: PreprocessSettings) -> Compose:
    """Deterministic prefix: load → orientation → isotropic spacing → crop to head → z-score → pad to a patch."""
    keys = ("image", "label")
    return Compose(
        [
            LoadCased(),
            Orientationd(
                keys=keys, axcodes=settings.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S"))
            ),
            Spacingd(
                keys=keys,
                pixdim=(settings.spacing_mm,) * 3,
                mode=(settings.image_interpolation, settings.label_interpolation),
            ),
            CropForegroundd(
                keys=keys,
                source_key="image",
                select_fn=partial(head_mask, settings=settings),
                margin=settings.crop_margin_voxels,
                allow_smaller=settings.crop_allow_smaller,
            ),
            ZScoreOverHeadd(keys="image", settings=settings),
            SpatialPadd(keys=keys, spatial_size=(settings.pad_to,) * 3, mode=settings.pad_mode),
            EnsureTyped(keys="image", dtype=getattr(torch, settings.image_dtype)),
            EnsureTyped(keys="label", dtype=getattr(torch, settings.label_dtype)),
        ]
    )


def training(settings: PipelineSettings, seed: int) -> Compose:
    """Prefix + random patches (half centred on tumor) and light augmentation; items keep only image and label."""
    keys = ("image", "label")
    pipeline = Compose(
        [
            *preprocess(settings.preprocessing).transforms,
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
