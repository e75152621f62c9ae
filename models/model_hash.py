"""The model's identity: a SHA-256 over its weights, the same whichever file holds them.

A checkpoint ({"state_dict", "meta"}), an exported bundle's models/model.pt and a state dict in memory hash alike
when their weights are equal, so a DICOM-SEG, predictions.json, a model card and a bundle can all name one model.
"""

import hashlib
from collections.abc import Mapping

import torch

HASH_PREFIX = "sha256:"


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``sha256:<hex>`` over (name, dtype, shape, little-endian bytes) of every tensor, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        values = state_dict[name].detach().to("cpu").contiguous().numpy()
        digest.update(f"{name}\0{values.dtype.str}\0{values.shape}\0".encode())
        digest.update(values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes())
    return HASH_PREFIX + digest.hexdigest()
