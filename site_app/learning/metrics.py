"""Per-case segmentation metrics on a case's native grid, with its voxel spacing; they stay at the site.

Regions come from the run setting `eval-regions` (models.shared.labels): "brats" (wt = 1∪2∪3, tc = 1∪3, et = 3) or
"per-class" (one region per label value). Keys are models.shared.wire's f"{metric}-{region}" for every metric in
wire.METRICS and count in wire.COUNTS. Per case and region, with P the predicted and T the true mask:

- dice = 2|P∩T| / (|P| + |T|)                       (MONAI compute_dice)
- hd95 = max of the two directed 95th percentiles of surface-voxel distances, mm (MONAI compute_hausdorff_distance)
- nsd  = surface Dice: share of both surfaces within NSD_TOLERANCE_MM of the other (MONAI compute_surface_dice)
- avd  = |vol(P) − vol(T)|, mL
- sensitivity = |P∩T| / |T|,  precision = |P∩T| / |P|
- lesions-tp / -fn: connected components of T that overlap / miss P; lesions-fp: components of P that miss T
  (26-connectivity, no minimum lesion size).

Empty masks (the cases are counted separately as empty-both, empty-pred: T present and missed,
empty-truth: T empty and P a false alarm):
- both empty: dice, nsd, sensitivity, precision 1; hd95 0.
- exactly one empty: dice, nsd, sensitivity, precision 0; hd95 HD95_PENALTY_MM.
"""

import warnings
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice
from scipy import ndimage

from models.shared.wire import region_key

# MONAI 1.6 warns about its own internal call on every HD95; it says nothing about our use.
warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)

HD95_PENALTY_MM = 373.13
"""HD95 when exactly one mask is empty: a BraTS-style penalty, the diagonal of a 240×240×155 mm volume. The
official BraTS evaluation packages use 373 or 374 mm, so means including such cases differ slightly from theirs."""

NSD_TOLERANCE_MM = 2.0
"""Surface Dice tolerance τ: a surface voxel counts as right when the other surface is within 2 mm."""

DICE_SETTINGS = MappingProxyType({"include_background": True, "ignore_empty": False})
HD95_SETTINGS = MappingProxyType(
    {"include_background": True, "distance_metric": "euclidean", "percentile": 95.0, "directed": False}
)
NSD_SETTINGS = MappingProxyType(
    {
        "include_background": True,
        "distance_metric": "euclidean",
        "class_thresholds": [NSD_TOLERANCE_MM],
        "use_subvoxels": False,
    }
)
LESION_CONNECTIVITY = ndimage.generate_binary_structure(3, 3)
"""26-connectivity: voxels touching by a face, an edge or a corner belong to the same lesion."""


def metric_settings() -> dict[str, str]:
    """The exact MONAI calls and conventions, as text for the reports."""
    return {
        "dice": _call("compute_dice", DICE_SETTINGS, with_spacing=False),
        "hd95": _call("compute_hausdorff_distance", HD95_SETTINGS),
        "nsd": _call("compute_surface_dice", NSD_SETTINGS),
        "lesions": "scipy.ndimage.label, 26-connectivity; a lesion is found when it overlaps the other mask by"
        " at least one voxel; no minimum lesion size",
        "empty-masks": f"both empty: dice, nsd, sensitivity, precision 1 and hd95 0; exactly one empty: 0 and"
        f" hd95 {HD95_PENALTY_MM} mm (BraTS-style penalty)",
        "grid": "native grid of each case (prediction resampled back with nearest neighbour), native spacing",
    }


def _call(function: str, settings: Mapping[str, object], with_spacing: bool = True) -> str:
    arguments = [f"{key}={value!r}" for key, value in settings.items()]
    return f"monai.metrics.{function}({', '.join(arguments + ['spacing=<native spacing>'] * with_spacing)})"


def case_metrics(
    prediction: np.ndarray,
    truth: np.ndarray,
    spacing_mm: tuple[float, float, float],
    regions: Mapping[str, tuple[int, ...]],
) -> dict[str, float]:
    """Every metric and count for one case: label maps of shape (X, Y, Z) on the native grid, spacing in mm."""
    result: dict[str, float] = {}
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    for region, values in regions.items():
        pred, true = np.isin(prediction, values), np.isin(truth, values)
        result.update(
            {
                region_key(name, region): value
                for name, value in _region_metrics(pred, true, spacing_mm, voxel_ml).items()
            }
        )
    return result


def _region_metrics(
    pred: np.ndarray, true: np.ndarray, spacing_mm: tuple[float, float, float], voxel_ml: float
) -> dict[str, float]:
    n_pred, n_true = int(pred.sum()), int(true.sum())
    n_both = int((pred & true).sum())
    metrics = {
        "avd": abs(n_pred - n_true) * voxel_ml,
        "empty-both": float(n_pred == n_true == 0),
        "empty-pred": float(n_pred == 0 < n_true),
        "empty-truth": float(n_true == 0 < n_pred),
        **_lesion_counts(pred, true),
    }
    if n_pred == n_true == 0:
        return {**metrics, "dice": 1.0, "hd95": 0.0, "nsd": 1.0, "sensitivity": 1.0, "precision": 1.0}
    if n_pred == 0 or n_true == 0:
        return {
            **metrics,
            "dice": 0.0,
            "hd95": HD95_PENALTY_MM,
            "nsd": 0.0,
            "sensitivity": 0.0,
            "precision": 0.0,
        }
    p, t = (torch.as_tensor(mask)[None, None].float() for mask in (pred, true))  # (B=1, C=1, X, Y, Z)
    return {
        **metrics,
        "dice": float(compute_dice(p, t, **DICE_SETTINGS)[0, 0]),
        "hd95": float(compute_hausdorff_distance(p, t, spacing=spacing_mm, **HD95_SETTINGS)[0, 0]),
        "nsd": float(compute_surface_dice(p, t, spacing=spacing_mm, **NSD_SETTINGS)[0, 0]),
        "sensitivity": n_both / n_true,
        "precision": n_both / n_pred,
    }


def _lesion_counts(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    true_lesions, n_true = ndimage.label(true, structure=LESION_CONNECTIVITY)
    pred_lesions, n_pred = ndimage.label(pred, structure=LESION_CONNECTIVITY)
    found = len(np.unique(true_lesions[pred & (true_lesions > 0)]))
    real = len(np.unique(pred_lesions[true & (pred_lesions > 0)]))
    return {
        "lesions-tp": float(found),
        "lesions-fn": float(n_true - found),
        "lesions-fp": float(n_pred - real),
    }
