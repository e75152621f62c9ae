"""Local validation: sliding-window inference at the run's spacing, metrics on each case's native grid.

The prediction is made on the preprocessed grid (RAS, isotropic `spacing_mm`, cropped to the head) and mapped
back onto the case's stored grid by inverting the preprocessing (MONAI Invertd, nearest neighbour), where it is
compared with the label as stored, at the stored voxel spacing.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from logging import Logger

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import Compose, Invertd

from data_prep.transforms import LoadCased, PipelineSettings, preprocess
from site_app.learning.metrics import case_metrics
from site_app.learning.postprocess import remove_small_lesions


@dataclass(frozen=True, eq=False)
class CaseEvaluation:
    """One case's metrics (native grid) and, for display, its image, truth and prediction on the evaluation grid."""

    case_id: str
    spacing_mm: tuple[float, float, float]
    """Native voxel edges along the stored i, j, k axes."""
    metrics: dict[str, float]
    image: np.ndarray
    """(X, Y, Z) RAS, isotropic at the run's spacing, z-scored."""
    truth: np.ndarray
    prediction: np.ndarray


SLIDING_WINDOW = {"sw_batch_size": 2, "overlap": 0.25, "mode": "gaussian"}
"""sliding_window_inference settings besides the window (the training patch): validation, prediction, bundles."""


@torch.no_grad()
def predict(
    model: torch.nn.Module, image: torch.Tensor, patch_size: int, device: torch.device
) -> torch.Tensor:
    """(1, X, Y, Z) image → (X, Y, Z) label map (argmax over classes)."""
    model.to(device).eval()
    logits = sliding_window_inference(
        image[None].to(device), roi_size=(patch_size,) * 3, predictor=model, **SLIDING_WINDOW
    )
    return logits.argmax(dim=1)[0].cpu()


def on_native_grid(prediction: torch.Tensor, label: MetaTensor, pipeline: Compose) -> np.ndarray:
    """(X, Y, Z) prediction on the preprocessed grid → label map on the grid the case was stored on.

    `label` is the preprocessed label: its applied operations say how to go back.
    """
    pred = MetaTensor(
        prediction[None].to(torch.uint8),
        meta=dict(label.meta),
        applied_operations=list(label.applied_operations),
    )
    inverse = Invertd(keys="pred", transform=pipeline, orig_keys="label", nearest_interp=True)
    return inverse({"pred": pred, "label": label})["pred"][0].numpy().round().astype(np.uint8)


def after_loading(settings: PipelineSettings) -> Compose:
    """The preprocessing without its loader: applied to a case already read, so it is read once."""
    return Compose([t for t in preprocess(settings.preprocessing).transforms if not isinstance(t, LoadCased)])


def evaluate_case(
    model: torch.nn.Module,
    item: dict[str, object],
    settings: PipelineSettings,
    regions: Mapping[str, tuple[int, ...]],
    device: torch.device,
    min_lesion_mm3: float = 0.0,
) -> CaseEvaluation:
    """Predict one dataset item (data_prep.transforms.case_item) and measure it against its stored label.

    `min_lesion_mm3` > 0: predicted tumor components below that volume are removed first (site_app.learning.postprocess)."""
    loaded = LoadCased()(item)
    truth = loaded["label"][0].numpy().astype(np.uint8)
    spacing = tuple(float(s) for s in np.linalg.norm(loaded["label"].affine.numpy()[:3, :3], axis=0))
    pipeline = after_loading(settings)
    processed = pipeline(loaded)
    prediction = predict(model, processed["image"], settings.patch_size, device)
    if min_lesion_mm3 > 0:
        cleaned = remove_small_lesions(prediction.numpy(), (settings.spacing_mm,) * 3, min_lesion_mm3)
        prediction = torch.from_numpy(cleaned)
    native = on_native_grid(prediction, processed["label"], pipeline)
    if native.shape != truth.shape:
        raise ValueError(f"prediction mapped back to {native.shape} but the stored label is {truth.shape}")
    return CaseEvaluation(
        case_id=str(item["case_id"]),
        spacing_mm=spacing,
        metrics=case_metrics(native, truth, spacing, regions),
        image=processed["image"][0].numpy(),
        truth=processed["label"][0].numpy().astype(np.uint8),
        prediction=prediction.numpy().astype(np.uint8),
    )


def validate_cases(
    model: torch.nn.Module,
    items: list[dict[str, object]],
    settings: PipelineSettings,
    regions: Mapping[str, tuple[int, ...]],
    device: torch.device,
    log: Logger,
    min_lesion_mm3: float = 0.0,
) -> tuple[list[CaseEvaluation], int]:
    """Every case that can be evaluated, and the number that could not (each logged to the site log only)."""
    results, failed = [], 0
    for item in items:
        try:
            results.append(evaluate_case(model, item, settings, regions, device, min_lesion_mm3))
        except Exception as error:  # noqa: BLE001 - one case that fails (file changed, vanished) is skipped
            log.warning("case %s not validated: %s: %s", item["case_id"], type(error).__name__, error)
            failed += 1
    return results, failed
