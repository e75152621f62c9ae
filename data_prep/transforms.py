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
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    RandShiftIntensityd,
    SelectItemsd,
    Spacingd,
    SpatialPadd,
)

from data_prep.discovery import CaseFiles
from data_prep.ingest_settings import IngestSettings
from data_prep.intensity import ZScoreOverHeadd, head_mask
from data_prep.loading import load_case
from models.shared.labels import NUM_CLASSES

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
    head_smoothing_voxels: float = 1.0
    """SD of the gaussian the image is smoothed with before the head threshold, in voxels at spacing_mm: without
    it, noisy air around a skull-stripped brain passes the threshold and joins the crop and the z-score."""
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
        if not self.head_smoothing_voxels >= 0:
            raise ValueError(f"head_smoothing_voxels must be at least 0, got {self.head_smoothing_voxels}")
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


def intensity_arguments(settings: PreprocessSettings) -> dict[str, object]:
    """The head-mask parameters of data_prep.intensity's functions, from ``settings``."""
    return {
        "fraction": settings.head_fraction,
        "quantiles": settings.head_quantiles,
        "samples": settings.head_quantile_samples,
        "smoothing": settings.head_smoothing_voxels,
    }


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


INTERPOLATION_FIELDS = {"image": "image_interpolation", "label": "label_interpolation"}
DTYPE_FIELDS = {"image": "image_dtype", "label": "label_dtype"}
"""The PreprocessSettings field holding each key's resampling mode and final dtype."""


def preprocessing_steps(
    settings: PreprocessSettings, keys: tuple[str, ...] = ("image", "label")
) -> list[tuple[type[MapTransform], dict[str, object]]]:
    """The deterministic prefix after loading, as (transform class, arguments), every argument from ``settings``:
    orientation → isotropic spacing → crop to the head → z-score → pad to a patch → dtypes. ``preprocess`` and
    ``image_preprocess`` build it, and ``oncofed export`` writes the same steps into a MONAI bundle's inference
    config, so every path preprocesses alike."""
    intensity = intensity_arguments(settings)
    return [
        (
            Orientationd,
            {"keys": keys, "axcodes": settings.orientation, "labels": (("L", "R"), ("P", "A"), ("I", "S"))},
        ),
        (
            Spacingd,
            {
                "keys": keys,
                "pixdim": (settings.spacing_mm,) * 3,
                "mode": tuple(getattr(settings, INTERPOLATION_FIELDS[k]) for k in keys),
            },
        ),
        (
            CropForegroundd,
            {
                "keys": keys,
                "source_key": "image",
                "select_fn": partial(head_mask, **intensity),
                "margin": settings.crop_margin_voxels,
                "allow_smaller": settings.crop_allow_smaller,
            },
        ),
        (ZScoreOverHeadd, {"keys": "image", **intensity}),
        (SpatialPadd, {"keys": keys, "spatial_size": (settings.pad_to,) * 3, "mode": settings.pad_mode}),
        *(
            (EnsureTyped, {"keys": key, "dtype": getattr(torch, getattr(settings, DTYPE_FIELDS[key]))})
            for key in keys
        ),
    ]


def preprocess(settings: PreprocessSettings) -> Compose:
    """Deterministic prefix: load → orientation → isotropic spacing → crop to head → z-score → pad to a patch."""
    return Compose([LoadCased(), *(step(**arguments) for step, arguments in preprocessing_steps(settings))])


def image_preprocess(settings: PreprocessSettings) -> Compose:
    """The same prefix for an image alone (prediction), applied to {"image": MetaTensor (1, X, Y, Z)} already read."""
    return Compose([step(**arguments) for step, arguments in preprocessing_steps(settings, ("image",))])


PATCH_CENTRE_RATIOS = (1, 1, 1, 1)
"""How often a training patch is centred on a voxel of each label (background, necrotic core, edema, enhancing
tumour), in proportion; a label a case lacks is skipped. Centring on tumour voxels alone (MONAI's pos/neg sampler)
centres most patches on edema, the largest label, and the small necrotic core and enhancing rim, the regions a
report's TC and ET measure, are at the edge of or outside many patches."""


def scanner_appearance_augmentation() -> list[MapTransform]:
    """Random changes of a z-scored training patch's appearance towards other scanners': gaussian noise and
    contrast around the patch mean, then brightness and offset; the label is untouched.

    After z-scoring over the head, sites still differ in noise and in how far tumour lies from brain: in the
    consortium preset the noisy low-contrast site has noise of about 0.31 (z units) against 0.16 at the large
    centre, and edema and enhancing rim 1.7 and 2.5 above zero against 2.0 and 3.0. A site's scanner reaches the
    global model only through that site's updates, weighed by its cases, so without these the large centres'
    updates teach only their own appearance. Noise: 15 % of patches, SD drawn uniformly up to 0.3 (nnU-Net's
    default range, variance up to 0.1). Contrast: 30 % of patches, a factor in 0.65-1.35 about the patch mean,
    clipped to the patch's range (nnU-Net's contrast augmentation, widened to cover 0.6 × contrast). nnU-Net's
    blur, gamma and low-resolution simulation on top lowered every arm of the consortium bench at its 60-epoch
    budget (bench/RESULTS.md), so they are left out.
    """
    return [
        RandGaussianNoised(keys="image", prob=0.15, mean=0.0, std=0.3),
        RandScaleIntensityFixedMeand(keys="image", factors=0.35, prob=0.3, preserve_range=True),
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
    ]


def training(settings: PipelineSettings, seed: int) -> Compose:
    """Prefix + random patches (centred on each label in turn, PATCH_CENTRE_RATIOS), a left-right flip and
    scanner_appearance_augmentation; items keep only image and label."""
    keys = ("image", "label")
    pipeline = Compose(
        [
            *preprocess(settings.preprocessing).transforms,
            RandCropByLabelClassesd(
                keys=keys,
                label_key="label",
                spatial_size=(settings.patch_size,) * 3,
                ratios=list(PATCH_CENTRE_RATIOS),
                num_classes=NUM_CLASSES,
                num_samples=settings.samples_per_case,
                warn=False,
            ),
            RandFlipd(keys=keys, prob=0.5, spatial_axis=0),  # left-right: anatomically plausible
            *scanner_appearance_augmentation(),
            SelectItemsd(
                keys=keys
            ),  # the case's file references (lists, None) do not batch, and are not needed
        ]
    )
    pipeline.set_random_state(seed=seed)
    return pipeline
