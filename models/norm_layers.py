"""Which entries of a model's state_dict belong to normalization layers (FedBN-style site-local normalization).

The presets use affine instance normalization: each norm layer has a per-channel scale (`weight`) and shift
(`bias`) and no running statistics. With `local-norm`, exactly these entries stay at each site.
"""

from torch import nn

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
"""Batch and instance norm (both _NormBase), group norm and layer norm."""


def norm_state_names(model: nn.Module) -> frozenset[str]:
    """Names in `model.state_dict()` of every parameter and buffer of a normalization layer."""
    names = set()
    for prefix, module in model.named_modules():
        if isinstance(module, NORM_LAYERS):
            names |= {f"{prefix}.{name}" if prefix else name for name in module.state_dict()}
    return frozenset(names)


def shared_state_names(model: nn.Module, local_norm: bool) -> list[str]:
    """The state_dict names that travel between sites and coordinator, in state_dict order."""
    local = norm_state_names(model) if local_norm else frozenset()
    return [name for name in model.state_dict() if name not in local]
