"""Where a model comes from: a checkpoint (.pt, {"state_dict", "meta"}) or a MONAI bundle folder (oncofed export).

Both give the weights and what inference needs besides them: the network preset and the preprocessing the model
was trained with (voxel spacing in mm, patch edge in voxels). A checkpoint's meta holds them (keys below); an older
checkpoint without them is read beside the run folder's config.json (RUN/models/x.pt) or the site work folder's
validation/context.json (WORK/models/global-latest.pt), both of which hold the run config under "run_config".
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from models.model_hash import weights_sha256
from models.norm_layers import norm_state_names
from models.presets import build_model, get_preset, patch_size
from models.shared.run_config import MODEL_PRESET, PATCH_SIZE, SPACING_MM, RunConfigError

META_ROUND = "round"
META_PRESET = "model_preset"
META_SPACING_MM = "spacing_mm"
META_PATCH_SIZE = "patch_size"
"""Checkpoint meta keys (snake_case, as save_checkpoint's callers write them)."""
META_NORM_LAYERS = "norm_layers"
"""Whose normalization layers a checkpoint holds (run setting `local-norm`); absent: the shared ones."""
NORM_INITIAL = "initial"
"""The coordinator's checkpoint of a local-norm run: shared weights with the initial (identity) norm layers,
a model no site validated; each site's own norm layers never left it."""
NORM_SITE = "site"
"""A site's personalized model of a local-norm run (WORK/models/global-latest.pt): the shared weights with that
site's own norm layers, as the site validated it."""

BUNDLE_METADATA = Path("configs") / "metadata.json"
BUNDLE_INFERENCE = Path("configs") / "inference.json"
BUNDLE_WEIGHTS = Path("models") / "model.pt"
"""A plain state dict, as MONAI's CheckpointLoader reads it."""
BUNDLE_TORCHSCRIPT = Path("models") / "model.ts"
BUNDLE_OWN_KEY = "oncofed"
"""Key of metadata.json holding our inference settings: {model_preset, spacing_mm, patch_size, model_sha256, ...}."""

RUN_CONFIG_FILES = (Path("..") / "config.json", Path("..") / "validation" / "context.json")
"""Relative to a checkpoint's folder: a run folder's config.json, a site work folder's validation context."""


class ModelSourceError(ValueError):
    """The model file or folder cannot be used; the message names it and what is wrong."""


@dataclass(frozen=True, eq=False)
class ModelSource:
    """A model ready to build, with its identity and the preprocessing it expects."""

    path: Path
    kind: Literal["checkpoint", "bundle"]
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, object]
    preset: str
    spacing_mm: float
    patch_size: int
    sha256: str
    """models.model_hash.weights_sha256 of the weights: equal for a checkpoint and its exported bundle."""

    def build(self) -> torch.nn.Module:
        """The network with these weights, in eval mode, on the CPU."""
        model = build_model(self.preset)
        model.load_state_dict(self.state_dict)
        return model.eval()


def inference_meta(spacing_mm: float, patch_edge: int) -> dict[str, object]:
    """The checkpoint meta entries for the preprocessing a model was trained with: the run settings
    `spacing-mm` and `patch-size` (as used: the preset's edge when the setting is 0). With them the predict path
    rebuilds data_prep.transforms.PreprocessSettings (PipelineSettings(...).preprocessing); its other fields are
    the project's fixed choices."""
    return {META_SPACING_MM: float(spacing_mm), META_PATCH_SIZE: int(patch_edge)}


def checkpoint_norm_meta(local_norm: bool, site: bool = False) -> dict[str, object]:
    """The meta entry saying whose norm layers a checkpoint holds: none without local-norm."""
    if not local_norm:
        return {}
    return {META_NORM_LAYERS: NORM_SITE if site else NORM_INITIAL}


def load_model_source(path: Path) -> ModelSource:
    """Read a checkpoint file or a bundle folder. Raises ModelSourceError naming ``path`` and the problem."""
    path = Path(path)
    if path.is_dir():
        return _bundle(path)
    if not path.is_file():
        raise ModelSourceError(f"model {path} does not exist (expected a checkpoint .pt or a bundle folder)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        state, meta = payload["state_dict"], dict(payload["meta"])
    except (OSError, RuntimeError, EOFError, KeyError, TypeError, ValueError) as e:
        raise ModelSourceError(
            f"model {path} is not an OncoFed checkpoint ({{'state_dict', 'meta'}} saved by torch): {e}"
        ) from e
    if META_SPACING_MM not in meta or META_PATCH_SIZE not in meta:
        meta.update(_run_config_beside(path))
    if meta.get(META_NORM_LAYERS) == NORM_INITIAL:
        raise ModelSourceError(
            f"model {path} comes from a run with site-local normalization (run setting `local-norm`): its norm"
            " layers are the initial ones and each site's own never left that site, so no site validated this"
            " model. At a site, use the model it validated with its own norm layers, WORK/models/global-latest.pt"
            " in the site's work folder (`site predict --model WORK/models/global-latest.pt`)"
        )
    return _source(path, "checkpoint", state, meta)


def _bundle(folder: Path) -> ModelSource:
    metadata_file, weights = folder / BUNDLE_METADATA, folder / BUNDLE_WEIGHTS
    for required in (metadata_file, weights):
        if not required.is_file():
            raise ModelSourceError(
                f"model folder {folder} is not an OncoFed bundle: {required.relative_to(folder)} is missing"
            )
    try:
        metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
        meta = dict(metadata[BUNDLE_OWN_KEY])
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, KeyError, TypeError, ValueError) as e:
        raise ModelSourceError(f"bundle {folder} cannot be read ({type(e).__name__}: {e})") from e
    return _source(folder, "bundle", state, meta)


def _source(path: Path, kind: str, state: object, meta: dict[str, object]) -> ModelSource:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelSourceError(f"model {path}: the weights are not a state dict of tensors")
    missing = [k for k in (META_PRESET, META_SPACING_MM, META_PATCH_SIZE) if k not in meta]
    if missing:
        raise ModelSourceError(
            f"model {path}: its meta has no {', '.join(missing)} and no run folder or site work folder lies beside"
            " it to read them from; use a run's models/final.pt, a site's models/global-latest.pt or a bundle"
        )
    preset = str(meta[META_PRESET])
    try:
        get_preset(preset)
        state = _with_identity_norm(dict(state), preset)
        source = ModelSource(
            path=path,
            kind=kind,  # type: ignore[arg-type]
            state_dict=dict(state),
            meta=meta,
            preset=preset,
            spacing_mm=float(meta[META_SPACING_MM]),  # type: ignore[arg-type]
            patch_size=int(meta[META_PATCH_SIZE]),  # type: ignore[call-overload]
            sha256=weights_sha256(state),
        )
        source.build()  # the weights must fit the preset's network
    except (ValueError, RuntimeError, TypeError) as e:
        raise ModelSourceError(f"model {path}: {e}") from e
    return source


def _with_identity_norm(state: dict[str, torch.Tensor], preset: str) -> dict[str, torch.Tensor]:
    """A model saved before the presets' instance norms became affine lacks their scale and shift: scale 1 and
    shift 0 compute exactly what those layers computed, so they are filled in. Any other gap is left for the
    network to refuse."""
    model = build_model(preset)
    expected = model.state_dict()
    missing = set(expected) - set(state)
    if missing and missing <= norm_state_names(model):
        return {**state, **{name: expected[name] for name in missing}}
    return state


def _run_config_beside(checkpoint: Path) -> dict[str, object]:
    for relative in RUN_CONFIG_FILES:
        candidate = (checkpoint.parent / relative).resolve()
        try:
            run_config = json.loads(candidate.read_text(encoding="utf-8"))["run_config"]
            preset = MODEL_PRESET.read(run_config)
            return inference_meta(
                SPACING_MM.read(run_config), patch_size(preset, PATCH_SIZE.read(run_config))
            )
        except (OSError, ValueError, KeyError, TypeError, RunConfigError):
            continue
    return {}
