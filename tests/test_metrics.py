"""Per-case metric conventions and the aggregates that leave a site."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from site_app.metrics import HD95_PENALTY_MM, case_metrics, summarize


def ball(shape, centre, radius, spacing) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij"), -1)
    return np.linalg.norm(grid - np.asarray(centre) * np.asarray(spacing), axis=-1) <= radius


def brute_force_hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """Max of the two directed 95th percentiles of surface-voxel distances (MONAI's definition)."""
    def surface(mask):
        return mask & ~ndimage.binary_erosion(mask)
    pa, pb = (np.argwhere(surface(m)) * np.asarray(spacing) for m in (a, b))
    d = np.linalg.norm(pa[:, None, :] - pb[None, :, :], axis=-1)
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


def test_both_empty_is_perfect_and_one_empty_is_penalised():
    empty = torch.zeros(16, 16, 16, dtype=torch.long)
    tumor = empty.clone()
    tumor[4:8, 4:8, 4:8] = 2  # edema only: wt present, tc and et empty in both
    both_empty = case_metrics(empty, empty, (1.0, 1.0, 1.0))
    assert both_empty["dice-wt"] == 1.0 and both_empty["hd95-wt"] == 0.0
    missed = case_metrics(empty, tumor, (1.0, 1.0, 1.0))
    assert missed["dice-wt"] == 0.0 and missed["hd95-wt"] == HD95_PENALTY_MM
    assert missed["dice-et"] == 1.0 and missed["hd95-et"] == 0.0
    false_alarm = case_metrics(tumor, empty, (1.0, 1.0, 1.0))
    assert false_alarm["dice-wt"] == 0.0 and false_alarm["hd95-wt"] == HD95_PENALTY_MM


def test_dice_and_hd95_match_a_brute_force_reference_on_anisotropic_spacing():
    spacing = (0.8, 1.0, 2.5)
    shape = (40, 36, 16)
    truth = ball(shape, (20, 18, 8), 9.0, spacing)
    pred = ball(shape, (22, 17, 8), 8.0, spacing)
    result = case_metrics(torch.as_tensor(pred * 3), torch.as_tensor(truth * 3), spacing)
    dice = 2 * (truth & pred).sum() / (truth.sum() + pred.sum())
    assert result["dice-et"] == pytest.approx(dice, abs=1e-6)
    assert result["hd95-et"] == pytest.approx(brute_force_hd95(pred, truth, spacing), rel=0.05)


def test_summary_has_aggregates_only():
    cases = [{"dice-wt": 0.2, "hd95-wt": 4.0, "dice-tc": 0.4, "hd95-tc": 2.0, "dice-et": 0.6, "hd95-et": 1.0},
             {"dice-wt": 0.8, "hd95-wt": 2.0, "dice-tc": 0.6, "hd95-tc": 1.0, "dice-et": 1.0, "hd95-et": 0.0},
             {"dice-wt": 0.5, "hd95-wt": 3.0, "dice-tc": 0.5, "hd95-tc": 1.5, "dice-et": 0.8, "hd95-et": 0.5}]
    summary = summarize(cases)
    assert summary["dice-wt-mean"] == pytest.approx(0.5)
    assert summary["dice-wt-median"] == pytest.approx(0.5)
    assert summary["dice-mean"] == pytest.approx(np.mean([c[k] for c in cases for k in c if k.startswith("dice")]))
    assert summary["n-cases"] == 3
    assert all(k.endswith(("-mean", "-median")) or k == "n-cases" for k in summary)
