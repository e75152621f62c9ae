"""MONAI 3D UNet presets: one name per size, so every site builds the same network."""

import math
from dataclasses import dataclass

import torch
from monai.networks.nets import UNet

from models.shared.labels import NUM_CLASSES


@dataclass(frozen=True)
class ModelPreset:
    """A UNet shape and the training patch edge (voxels) it is sized for."""

    channels: tuple[int, ...]
    strides: tuple[int, ...]
    num_res_units: int
    patch_size: int


MODEL_PRESETS: dict[str, ModelPreset] = {
    # For tests: a few seconds per round on a CPU.
    "tiny": ModelPreset(channels=(8, 16, 32), strides=(2, 2), num_res_units=1, patch_size=32),
    # CPU default for the demo: 1.2 M parameters.
    "small": ModelPreset(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2, patch_size=64),
    # For GPU sites.
    "large": ModelPreset(
        channels=(32, 64, 128, 256, 320), strides=(2, 2, 2, 2), num_res_units=2, patch_size=96
    ),
}


def get_preset(name: str) -> ModelPreset:
    """Look a preset up by name; unknown names list the valid ones."""
    try:
        return MODEL_PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown model preset {name!r}; choose one of: {', '.join(MODEL_PRESETS)}"
        ) from None


def patch_size(preset: str, configured: int) -> int:
    """The training and inference patch edge (voxels): the run setting `patch-size` when positive, else (0) the
    preset's own."""
    if configured < 0:
        raise ValueError(
            f"run setting `patch-size` is {configured}; use 0 for the model preset's, or a positive edge"
        )
    if configured == 0:
        return get_preset(preset).patch_size
    factor = math.prod(get_preset(preset).strides)
    if configured % factor:
        lower, upper = configured - configured % factor or factor, configured - configured % factor + factor
        raise ValueError(
            f"run setting `patch-size` is {configured}, but model preset `{preset}` halves the patch "
            f"{len(get_preset(preset).strides)} times, so the edge must be a multiple of {factor}: use "
            f"{lower} or {upper} (or 0 for the preset's {get_preset(preset).patch_size})"
        )
    return configured


NETWORK = "monai.networks.nets.UNet"
"""The network class every preset builds (its import path, as MONAI bundle configs name it)."""


def network_arguments(preset: str) -> dict[str, object]:
    """Keyword arguments of NETWORK for ``preset``: plain values, so a bundle config can hold them as they are."""
    spec = get_preset(preset)
    return {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": NUM_CLASSES,
        "channels": list(spec.channels),
        "strides": list(spec.strides),
        "num_res_units": spec.num_res_units,
        "norm": ["instance", {"affine": True}],
    }


def build_model(preset: str, seed: int | None = None) -> torch.nn.Module:
    """A 3D UNet mapping (B, 1, X, Y, Z) intensities to (B, NUM_CLASSES, X, Y, Z) logits.

    Affine instance normalisation (a learned per-channel scale and shift, no running statistics): weights
    are all there is to aggregate, and with `local-norm` the norm layers' scale and shift stay at each site.
    """
    arguments = network_arguments(preset)
    if seed is not None:
        torch.manual_seed(seed)
    return UNet(**arguments)
