"""Weights travel by parameter name between a torch module, Flower's ArrayRecord and checkpoints."""

from collections.abc import Collection
from pathlib import Path

import torch
from flwr.app import ArrayRecord

from models.shared.atomic import atomic_path


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
    """Write {'state_dict', 'meta'} atomically (models.shared.atomic: temp file in the same folder, then rename)."""
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


def load_saved_model(
    path: Path, model_preset: str, option: str
) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """A global model an earlier run saved (RUN_DIR/models/*.pt) to start a new run from, checked to be a readable
    OncoFed checkpoint of `model_preset`; ValueError names `option` (the flag or setting that gave `path`), the
    file and the fix."""
    if not path.is_file():
        raise ValueError(f"{option} {path}: no such file; give a RUN_DIR/models/*.pt file of an earlier run")
    try:
        state, meta = load_checkpoint(path)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ValueError(
            f"{option} {path} is not a model saved by an OncoFed run ({type(error).__name__}); give a "
            "RUN_DIR/models/*.pt file"
        ) from None
    if meta.get("model_preset") != model_preset:
        raise ValueError(
            f"{option} {path} is a {meta.get('model_preset')!r} model, but this run uses --preset {model_preset}; "
            f"give --preset {meta.get('model_preset')}"
        )
    return state, meta
