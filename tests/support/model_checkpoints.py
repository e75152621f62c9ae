"""Checkpoints for prediction tests, without training: an untrained tiny network whose output layer's bias is set,
so that its prediction is predictable enough to test (a label present, or nothing but background)."""

from pathlib import Path

import torch
from flwr.app import ArrayRecord

from models.presets import build_model
from models.shared.labels import NUM_CLASSES
from models.weights import save_checkpoint

SOME_EDEMA = (0.0, 0.0, 0.3, 0.0)
"""Edema favoured a little: with random weights the prediction holds edema and usually other labels."""
BACKGROUND_ONLY = (20.0, 0.0, 0.0, 0.0)
"""Every voxel predicted background."""


def biased_checkpoint(
    path: Path,
    bias: tuple[float, ...],
    *,
    preset: str = "tiny",
    spacing_mm: float = 4.0,
    patch_size: int = 16,
    seed: int = 0,
) -> Path:
    """Write {"state_dict", "meta"} (models.weights format) of ``preset`` with the last layer's bias = ``bias``."""
    model = build_model(preset, seed=seed)
    state = model.state_dict()
    last_bias = [
        name for name, tensor in state.items() if name.endswith("bias") and tensor.shape == (NUM_CLASSES,)
    ]
    state[last_bias[-1]] = torch.tensor(bias, dtype=torch.float32)
    meta = {"round": 0, "model_preset": preset, "spacing_mm": spacing_mm, "patch_size": patch_size}
    save_checkpoint(ArrayRecord(state), path, meta)
    return path
