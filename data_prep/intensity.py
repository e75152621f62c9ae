"""Intensity steps of the preprocessing: the head mask (what the crop keeps) and the z-score over the head.

Self-contained on purpose (torch, numpy and MONAI only, no project imports): ``oncofed export`` copies this file
verbatim into a MONAI bundle (scripts/oncofed_intensity.py), so a bundle preprocesses exactly as the sites do.
The parameters (fraction, quantiles, samples, smoothing) have no defaults here: they are PreprocessSettings'
head_fraction, head_quantiles, head_quantile_samples and head_smoothing_voxels
(data_prep.transforms.intensity_arguments), written into the bundle's config as values.
"""

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import GaussianSmooth, MapTransform


def head_mask(
    image: np.ndarray | torch.Tensor,
    *,
    fraction: float,
    quantiles: Sequence[float],
    samples: int,
    smoothing: float,
) -> np.ndarray | torch.Tensor:
    """Foreground (head) mask of a channel-first (C, X, Y, Z) or plain (X, Y, Z) image, of the same shape and kind
    (numpy or torch): voxels of the image smoothed by a gaussian of SD ``smoothing`` voxels (0: not smoothed) above
    ``fraction`` of its robust intensity range, the range being the ``quantiles`` (low, high) of about ``samples``
    evenly strided voxels. Robust to scanner scale and offset; the smoothing keeps background noise out, however
    strong (unsmoothed, air voxels above the threshold scatter over the whole field of view, so the crop keeps
    all of it and the z-score's statistics depend on the scanner's noise)."""
    values = torch.as_tensor(image).float()
    if smoothing > 0:
        channels = values if values.ndim == 4 else values[None]
        smoothed = GaussianSmooth(sigma=smoothing)(channels)
        values = torch.as_tensor(smoothed if values.ndim == 4 else smoothed[0])
    flat = values.flatten()
    stride = max(1, flat.numel() // samples)
    lo, hi = torch.quantile(flat[::stride], torch.tensor([float(q) for q in quantiles]))
    mask = values > lo + fraction * (hi - lo)
    return mask if isinstance(image, torch.Tensor) else mask.numpy()


def zscore_over_head(
    image: torch.Tensor, *, fraction: float, quantiles: Sequence[float], samples: int, smoothing: float
) -> torch.Tensor:
    """Z-score with mean and SD taken over the head (head_mask's parameters) only, so air does not dilute the
    statistics."""
    mask = head_mask(image, fraction=fraction, quantiles=quantiles, samples=samples, smoothing=smoothing)
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
        self,
        keys: str | Sequence[str],
        *,
        fraction: float,
        quantiles: Sequence[float],
        samples: int,
        smoothing: float,
    ) -> None:
        super().__init__(keys=keys)
        self.head = {
            "fraction": fraction,
            "quantiles": tuple(quantiles),
            "samples": samples,
            "smoothing": smoothing,
        }

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = zscore_over_head(d[key], **self.head)
        return d
