"""Per-case segmentation metrics (kept at the site) and the aggregates that may leave it.

Conventions, per region (BraTS: wt = 1∪2∪3, tc = 1∪3, et = 3):
- Dice: both masks empty → 1.0; exactly one empty → 0.0.
- HD95 (mm, on the evaluation grid with its spacing; MONAI: max of the two directed 95th percentiles):
  both empty → 0.0; exactly one empty → HD95_PENALTY_MM.
"""

import statistics
import warnings

import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from data_prep.labels import REGIONS

# MONAI 1.6 warns about its own internal call on every HD95; it says nothing about our use.
warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)

HD95_PENALTY_MM = 373.13
"""HD95 when exactly one mask is empty: the BraTS convention (diagonal of a 240×240×155 mm volume)."""


def region_masks(label: torch.Tensor) -> torch.Tensor:
    """(X, Y, Z) label map → (1, R, X, Y, Z) binary masks, one channel per region in REGIONS order."""
    masks = [torch.isin(label, torch.tensor(values, device=label.device)) for values in REGIONS.values()]
    return torch.stack(masks)[None].float()


def case_metrics(prediction: torch.Tensor, truth: torch.Tensor, spacing_mm: tuple[float, float, float]) -> dict[str, float]:
    """Dice and HD95 per region for one case; label maps of shape (X, Y, Z)."""
    pred, true = region_masks(prediction), region_masks(truth)
    dice = compute_dice(pred, true, include_background=True, ignore_empty=False)[0]
    result: dict[str, float] = {}
    for index, region in enumerate(REGIONS):
        pred_empty, true_empty = not pred[0, index].any(), not true[0, index].any()
        if pred_empty and true_empty:
            region_dice, hd95 = 1.0, 0.0
        elif pred_empty or true_empty:
            region_dice, hd95 = 0.0, HD95_PENALTY_MM
        else:
            region_dice = float(dice[index])
            hd95 = float(compute_hausdorff_distance(pred[:, index : index + 1], true[:, index : index + 1],
                                                    include_background=True, percentile=95, spacing=spacing_mm)[0, 0])
        result[f"dice-{region}"] = region_dice
        result[f"hd95-{region}"] = hd95
    return result


def summarize(per_case: list[dict[str, float]]) -> dict[str, float | int]:
    """Aggregates only: mean and median of each metric, the mean Dice over regions, and the case count."""
    if not per_case:
        raise ValueError("no validation case to summarize")
    summary: dict[str, float | int] = {}
    for key in per_case[0]:
        values = [case[key] for case in per_case]
        summary[f"{key}-mean"] = float(statistics.fmean(values))
        summary[f"{key}-median"] = float(statistics.median(values))
    summary["dice-mean"] = float(statistics.fmean(case[f"dice-{r}"] for case in per_case for r in REGIONS))
    summary["n-cases"] = len(per_case)
    return summary
