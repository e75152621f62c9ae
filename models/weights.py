"""Weights travel by parameter name between a torch module, Flower's ArrayRecord and checkpoints."""

from collections.abc import Collection
from pathlib import Path

import torch
from flwr.app import ArrayRecord

from models.atomic import atomic_path


def to_record(model: torch.nn.Module) -> ArrayRecord:
    """The model's state_dict as an ArrayRecord (float32/int arrays keyed by parameter name)."""
    return ArrayRecord(model.state_dict())


def load_record(model: torch.nn.Module, record: ArrayRecord, keep: Collection[str] = ()) -> None:
    """Load weights by name; a missing or unexpected name is an error naming it (never a silent zip).

    Names in `keep` may be absent from the record: those keep the model's own values (site-local norm layers).
    float16 arrays (transport-dtype float16) are cast to the model's float32.
    """
    state = record.to_torch_state_dict()
    expected = model.state_dict()
    state.update({name: expected[name] for name in keep if name not in state and name in expected})
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"weights do not fit the model: missing {missing[:3]}{'…' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'…' if len(unexpected) > 3 else ''} (was the same model preset used?)"
        )
    # Aggregation returns float64 for every array: cast back to the model's dtypes.
    model.load_state_dict({name: state[name].to(expected[name].dtype) for name in expected})


def save_checkpoint(record: ArrayRecord, path: Path, meta: dict[str, object]) -> None:
    """Write {'state_dict', 'meta'} atomically (models.atomic: temp file in the same folder, then rename)."""
    state = {
        name: tensor.float() if tensor.is_floating_point() else tensor
        for name, tensor in record.to_torch_state_dict().items()
    }
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "meta": meta}, tmp)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Read a checkpoint written by save_checkpoint, without unpickling arbitrary objects."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return payload["state_dict"], payload["meta"]
