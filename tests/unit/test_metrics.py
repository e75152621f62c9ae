"""Per-case metrics against an independent brute-force reference, every empty-mask convention, and the
aggregates (with their bootstrap CI) that are all a site may send."""

import logging

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import cdist
from scipy.stats.mstats import hdquantiles

from data_prep.synth.federation import write_federation
from data_prep.transforms import LoadCased, PipelineSettings
from models.presets import build_model
from models.shared.labels import evaluation_regions
from models.shared.wire import COUNTS, METRICS, STATS
from site_app.disclosure.aggregates import bootstrap_indices, describe, position_estimates, site_aggregates
from site_app.learning.metrics import HD95_PENALTY_MM, NSD_TOLERANCE_MM, case_metrics
from site_app.learning.site_data import load_site_cases
from site_app.learning.validation import after_loading, evaluate_case, on_native_grid
from site_app.settings.identity import SitePaths

BRATS = evaluation_regions("brats")
SPACING = (0.8, 1.1, 2.5)  # anisotropic: thick slices along the third axis


def ball(shape, centre, radius_mm, spacing) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij"), -1)
    return np.linalg.norm(grid - np.asarray(centre) * np.asarray(spacing), axis=-1) <= radius_mm


def surface_mm(mask: np.ndarray, spacing) -> np.ndarray:
    """Physical coordinates of the mask's surface voxels: in the mask, with a 6-neighbour outside it."""
    return np.argwhere(mask & ~ndimage.binary_erosion(mask)) * np.asarray(spacing)


def brute_force(pred: np.ndarray, true: np.ndarray, spacing) -> dict[str, float]:
    """Every pairwise distance between the two surfaces (no distance transform, no KD-tree)."""
    distances = cdist(surface_mm(pred, spacing), surface_mm(true, spacing))
    pred_to_true, true_to_pred = distances.min(axis=1), distances.min(axis=0)
    overlap = (pred & true).sum()
    return {
        "dice": 2 * overlap / (pred.sum() + true.sum()),
        "hd95": max(np.percentile(pred_to_true, 95), np.percentile(true_to_pred, 95)),
        "nsd": ((pred_to_true <= NSD_TOLERANCE_MM).sum() + (true_to_pred <= NSD_TOLERANCE_MM).sum())
        / (len(pred_to_true) + len(true_to_pred)),
        "avd": abs(int(pred.sum()) - int(true.sum())) * np.prod(spacing) / 1000,
        "sensitivity": overlap / true.sum(),
        "precision": overlap / pred.sum(),
    }


@pytest.mark.parametrize(
    "offset, radii", [((2, -1, 1), (9.0, 8.0)), ((0, 4, -2), (7.0, 10.5)), ((5, 0, 0), (6.0, 6.0))]
)
def test_metrics_match_a_brute_force_reference_on_anisotropic_spacing(offset, radii):
    shape = (40, 36, 16)
    truth = ball(shape, (20, 18, 8), radii[0], SPACING)
    pred = ball(shape, np.add((20, 18, 8), offset), radii[1], SPACING)
    result = case_metrics(pred * 3, truth * 3, SPACING, BRATS)  # enhancing: in every BraTS region
    reference = brute_force(pred, truth, SPACING)
    for region in BRATS:
        for metric in METRICS:
            assert result[f"{metric}-{region}"] == pytest.approx(reference[metric], rel=1e-6, abs=1e-9), (
                metric
            )


def test_spacing_is_applied_per_axis():
    """The same voxels at another spacing: distances scale along each axis, not as if isotropic."""
    shape = (30, 30, 12)
    truth = ball(shape, (15, 15, 6), 5.0, (1.0, 1.0, 1.0))
    pred = np.roll(truth, 2, axis=2)  # shifted two slices
    thin = case_metrics(pred * 1, truth * 1, (1.0, 1.0, 1.0), BRATS)
    thick = case_metrics(pred * 1, truth * 1, (1.0, 1.0, 3.0), BRATS)
    assert thin["dice-wt"] == thick["dice-wt"]
    assert thick["hd95-wt"] == pytest.approx(brute_force(pred, truth, (1.0, 1.0, 3.0))["hd95"])
    assert thick["hd95-wt"] > thin["hd95-wt"]


EMPTY = np.zeros((16, 16, 16), dtype=np.uint8)
EDEMA = EMPTY.copy()
EDEMA[4:9, 4:9, 4:9] = 2  # whole tumor present; tumor core and enhancing absent


@pytest.mark.parametrize(
    "pred, true, region, expected",
    [
        # both empty: perfect
        (
            EMPTY,
            EMPTY,
            "wt",
            {
                "dice": 1.0,
                "nsd": 1.0,
                "sensitivity": 1.0,
                "precision": 1.0,
                "hd95": 0.0,
                "avd": 0.0,
                "empty-both": 1.0,
                "empty-pred": 0.0,
                "empty-truth": 0.0,
            },
        ),
        (
            EDEMA,
            EDEMA,
            "et",
            {
                "dice": 1.0,
                "nsd": 1.0,
                "sensitivity": 1.0,
                "precision": 1.0,
                "hd95": 0.0,
                "avd": 0.0,
                "empty-both": 1.0,
                "empty-pred": 0.0,
                "empty-truth": 0.0,
            },
        ),
        # truth present, nothing predicted: missed
        (
            EMPTY,
            EDEMA,
            "wt",
            {
                "dice": 0.0,
                "nsd": 0.0,
                "sensitivity": 0.0,
                "precision": 0.0,
                "hd95": HD95_PENALTY_MM,
                "avd": 0.125,
                "empty-both": 0.0,
                "empty-pred": 1.0,
                "empty-truth": 0.0,
                "lesions-tp": 0.0,
                "lesions-fn": 1.0,
                "lesions-fp": 0.0,
            },
        ),
        # truth empty, something predicted: false alarm
        (
            EDEMA,
            EMPTY,
            "wt",
            {
                "dice": 0.0,
                "nsd": 0.0,
                "sensitivity": 0.0,
                "precision": 0.0,
                "hd95": HD95_PENALTY_MM,
                "avd": 0.125,
                "empty-both": 0.0,
                "empty-pred": 0.0,
                "empty-truth": 1.0,
                "lesions-tp": 0.0,
                "lesions-fn": 0.0,
                "lesions-fp": 1.0,
            },
        ),
    ],
)
def test_empty_mask_conventions(pred, true, region, expected):
    result = case_metrics(pred, true, (1.0, 1.0, 1.0), BRATS)
    assert {k: result[f"{k}-{region}"] for k in expected} == expected


def test_every_metric_and_count_is_present_for_every_region():
    result = case_metrics(EDEMA, EMPTY, (1.0, 1.0, 1.0), BRATS)
    assert set(result) == {f"{k}-{r}" for k in (*METRICS, *COUNTS) for r in BRATS}
    assert all(np.isfinite(v) for v in result.values())


def test_lesions_are_connected_components():
    truth, pred = EMPTY.copy(), EMPTY.copy()
    truth[1:4, 1:4, 1:4] = 1  # lesion 1: found
    truth[10:13, 10:13, 10:13] = 1  # lesion 2: missed
    pred[2:5, 2:5, 2:5] = 1
    pred[1:3, 12:15, 1:3] = 1  # a false lesion
    pred[6, 6, 6] = pred[7, 7, 7] = (
        1  # two voxels touching by a corner: one more false lesion (26-connectivity)
    )
    result = case_metrics(pred, truth, (1.0, 1.0, 1.0), BRATS)
    assert (result["lesions-tp-tc"], result["lesions-fn-tc"], result["lesions-fp-tc"]) == (1.0, 1.0, 2.0)


def test_per_class_regions():
    regions = evaluation_regions("per-class")
    assert dict(regions) == {"label1": (1,), "label2": (2,), "label3": (3,)}
    result = case_metrics(EDEMA, EDEMA, (1.0, 1.0, 1.0), regions)
    assert result["dice-label2"] == 1.0 and result["empty-both-label1"] == 1.0
    with pytest.raises(ValueError, match="brats"):
        evaluation_regions("organs")


# Aggregates: what may leave the site


def per_case_values(values_by_key: dict[str, list[float]]) -> list[dict[str, float]]:
    n = len(next(iter(values_by_key.values())))
    return [{key: values[i] for key, values in values_by_key.items()} for i in range(n)]


def synthetic_cases(n: int, seed: int = 0) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return per_case_values(
        {
            f"{k}-{r}": list(rng.uniform(0, 1, n)) if k in METRICS else list(rng.integers(0, 2, n))
            for k in (*METRICS, *COUNTS)
            for r in BRATS
        }
    )


def test_aggregates_are_the_documented_statistics():
    """Mean and CI always; Harrell-Davis median and quartiles from min_position_cases on; rounded (policy R3-R5)."""
    cases = synthetic_cases(12)
    aggregates = site_aggregates(cases, list(BRATS), seed=4, min_position_cases=10)
    values = np.array([c["hd95-tc"] for c in cases])
    assert aggregates["hd95-tc-mean"] == round(values.mean(), 1)
    q1, median, q3 = np.asarray(hdquantiles(values, prob=[0.25, 0.5, 0.75]))
    assert (aggregates["hd95-tc-q1"], aggregates["hd95-tc-median"], aggregates["hd95-tc-q3"]) == (
        round(q1, 1),
        round(median, 1),
        round(q3, 1),
    )
    dice = np.array([c["dice-et"] for c in cases])
    assert aggregates["dice-et-mean"] == round(dice.mean(), 3)
    assert aggregates["lesions-fp-et"] == sum(c["lesions-fp-et"] for c in cases)
    assert aggregates["n-cases"] == 12
    assert aggregates["dice-mean"] == round(np.mean([c[f"dice-{r}"] for c in cases for r in BRATS]), 3)
    assert set(aggregates) == (
        {f"{m}-{r}-{s}" for m in METRICS for r in BRATS for s in STATS}
        | {f"{c}-{r}" for c in COUNTS for r in BRATS}
        | {"n-cases", "dice-mean", "dice-mean-ci-low", "dice-mean-ci-high"}
    )
    assert all(isinstance(v, int | float) and not isinstance(v, bool) for v in aggregates.values())


def test_below_min_position_cases_only_means_and_cis_are_computed():
    aggregates = site_aggregates(synthetic_cases(9), list(BRATS), seed=4, min_position_cases=10)
    assert {k.rsplit("-", 1)[-1] for k in aggregates if k.startswith("dice-wt-")} == {"mean", "low", "high"}
    assert not [k for k in aggregates if k.endswith(("-median", "-q1", "-q3"))]


def test_position_estimates_are_never_a_single_case():
    """numpy's linear quartiles of 5 or 13 values are order statistics; Harrell-Davis estimates are not."""
    for n in (5, 9, 13, 17):
        values = np.random.default_rng(n).uniform(0, 1, n)
        assert set(np.percentile(values, [25, 50, 75])) <= set(values)  # what the site used to send
        assert not set(position_estimates(values).values()) & set(values)


def test_bootstrap_ci_is_seeded_and_covers_the_mean_like_theory_says():
    values = np.random.default_rng(1).normal(0.7, 0.1, 80)
    resamples = bootstrap_indices(len(values), seed=9)
    first = describe(values, resamples, with_position=False)
    again = describe(values, bootstrap_indices(len(values), seed=9), with_position=False)
    assert first == again
    assert first != describe(values, bootstrap_indices(len(values), seed=10), with_position=False)
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(len(values))  # normal approximation
    assert first["ci-low"] < values.mean() < first["ci-high"]
    assert (first["ci-high"] - first["ci-low"]) / 2 == pytest.approx(half_width, rel=0.15)


def test_bootstrap_ci_of_identical_values_is_that_value():
    ci = describe(np.full(6, 0.42), bootstrap_indices(6, seed=0), with_position=False)
    assert ci["ci-low"] == pytest.approx(0.42) and ci["ci-high"] == pytest.approx(0.42)


# Native grid: the prediction is measured where the label was stored, at the stored spacing

PIPELINE = PipelineSettings(spacing_mm=2.0, patch_size=32, samples_per_case=1)


@pytest.fixture(scope="module")
def dicom_site_items(tmp_path_factory):
    """Validation items of a synthetic DICOM site: stored LPS, 2.5 × 2.5 × 4 mm (thick slices)."""
    root = tmp_path_factory.mktemp("native")
    write_federation(root / "data", n_sites=2, seed=5, preset="tiny")
    site = SitePaths(name="hospital-b", data=root / "data" / "hospital-b", work=root / "work")
    return load_site_cases(site, PIPELINE, validation_fraction=0.5, log=logging.getLogger("test")).val


def test_a_prediction_maps_back_onto_the_stored_grid(dicom_site_items):
    """The preprocessed label, taken as a prediction, lands exactly on the stored label (2 mm is finer than 2.5
    and 4 mm, so nearest-neighbour resampling there and back is lossless)."""
    item = dicom_site_items[0]
    loaded = LoadCased()(item)
    stored = loaded["label"][0].numpy()
    pipeline = after_loading(PIPELINE)
    processed = pipeline(loaded)
    assert processed["label"].shape[1:] != stored.shape  # really another grid
    native = on_native_grid(processed["label"][0].long(), processed["label"], pipeline)
    np.testing.assert_array_equal(native, stored)


def test_a_case_is_measured_at_its_stored_spacing(dicom_site_items):
    result = evaluate_case(
        build_model("tiny", seed=0), dicom_site_items[0], PIPELINE, BRATS, torch.device("cpu")
    )
    assert result.spacing_mm == pytest.approx((2.5, 2.5, 4.0))
    assert set(result.metrics) == {f"{k}-{r}" for k in (*METRICS, *COUNTS) for r in BRATS}
    assert (
        result.image.shape == result.truth.shape == result.prediction.shape
    )  # the evaluation grid, for display
