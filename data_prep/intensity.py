"""Intensity steps of the preprocessing: the head mask (what the crop keeps) and the z-score over the head.

Self-contained on purpose (torch, numpy and MONAI only, no project imports): ``oncofed export`` copies this file
verbatim into a MONAI bundle (scripts/oncofed_intensity.py), so a bundle preprocesses exactly as the sites do.
The parameters (fraction, quantiles, samples) have no defaults here: they are PreprocessSettings' head_fraction,
head_quantiles and head_quantile_samples (data_prep.transforms.intensity_arguments), written into the bundle's
config as values.
"""

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform


def head_mask(
    image: np.ndarray | torch.Tensor, *, fraction: float, quantiles: Sequence[float], samples: int
) -> np.ndarray | torch.Tensor:
    """Foreground (head) mask: voxels above ``fraction`` of the robust intensity range, the range being the
    ``quantiles`` (low, high) of about ``samples`` evenly strided voxels. Robust to scanner scale/offset and to
    background noise."""
    values = (
        image.flatten().float()
        if isinstance(image, torch.Tensor)
        else torch.as_tensor(image).flatten().float()
    )
    stride = max(1, values.numel() // samples)
    lo, hi = torch.quantile(values[::stride], torch.tensor([float(q) for q in quantiles]))
    return image > lo + fraction * (hi - lo)


def zscore_over_head(
    image: torch.Tensor, *, fraction: float, quantiles: Sequence[float], samples: int
) -> torch.Tensor:
    """Z-score with mean and SD taken over the head (head_mask's parameters) only, so air does not dilute the
    statistics."""
    mask = head_mask(image, fraction=fraction, quantiles=quantiles, samples=samples)
    inside = image[mask].float()
    if inside.numel() < 2:
        raise ValueError("image has no foreground above the background level (constant or empty volume)")
    std = inside.std()
    if not torch.isfinite(std) or std == 0:
        raise ValueError("image intensities are constant or not finite over the head")
    return (image - inside.mean()) / std


class ZScoreOverHeadd(MapTransform):
    """Dictionary wrapper of zscore_over_head."""

    def __init__(
        self, keys: str | Sequence[str], *, fraction: float, quantiles: Sequence[float], samples: int
    ) -> None:
        super().__init__(keys=keys)
        self.head = {"fraction": fraction, "quantiles": tuple(quantiles), "samples": samples}

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = zscore_over_head(d[key], **self.head)
        return d
