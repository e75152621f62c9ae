"""Intensity steps of the preprocessing: the head mask (what the crop keeps) and the z-score over the head.

Self-contained on purpose (torch, numpy and MONAI only, no project imports): ``oncofed export`` copies this file
verbatim into a MONAI bundle (scripts/oncofed_intensity.py), so a bundle preprocesses exactly as the sites do.
"""

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.transforms import MapTransform

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


class ZScoreOverHeadd(MapTransform):
    """Dictionary wrapper of zscore_over_head."""

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = zscore_over_head(d[key])
        return d
