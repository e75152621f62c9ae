"""The aggregates of a site's per-case metrics: the only validation numbers that may leave the site.

For every f"{metric}-{region}" in metrics.METRICS: mean, median, q1, q3 (linear interpolation, numpy's default)
and a 95 % percentile-bootstrap CI of the mean; for every f"{count}-{region}" in metrics.COUNTS: the sum over cases.
Also the mean Dice over regions (`dice-mean`, with its CI), the case count and the range of native voxel edges.
"""

from collections.abc import Mapping, Sequence

import numpy as np

from site_app.metrics import COUNTS, METRICS

BOOTSTRAP_RESAMPLES = 2000
CI_LEVEL = 0.95
STATS = ("mean", "median", "q1", "q3", "ci-low", "ci-high")


def bootstrap_indices(n_cases: int, seed: int) -> np.ndarray:
    """(BOOTSTRAP_RESAMPLES, n_cases) case indices drawn with replacement; shared by every metric (paired)."""
    return np.random.default_rng(seed).integers(0, n_cases, size=(BOOTSTRAP_RESAMPLES, n_cases))


def describe(values: np.ndarray, resamples: np.ndarray) -> dict[str, float]:
    """Mean, median, quartiles and the percentile-bootstrap CI of the mean of one metric's per-case values."""
    tail = (1.0 - CI_LEVEL) / 2.0
    q1, median, q3 = np.percentile(values, [25.0, 50.0, 75.0])
    low, high = np.quantile(values[resamples].mean(axis=1), [tail, 1.0 - tail])
    return {
        "mean": float(values.mean()),
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "ci-low": float(low),
        "ci-high": float(high),
    }


def site_aggregates(
    per_case: Sequence[Mapping[str, float]],
    spacings_mm: Sequence[tuple[float, float, float]],
    regions: Sequence[str],
    seed: int,
) -> dict[str, float | int]:
    """Aggregates over a site's validation cases (per_case from metrics.case_metrics, in any order)."""
    if not per_case:
        raise ValueError("no validation case to aggregate")
    resamples = bootstrap_indices(len(per_case), seed)
    aggregates: dict[str, float | int] = {"n-cases": len(per_case)}
    for metric in METRICS:
        for region in regions:
            values = np.array([case[f"{metric}-{region}"] for case in per_case], dtype=np.float64)
            aggregates.update(
                {f"{metric}-{region}-{stat}": v for stat, v in describe(values, resamples).items()}
            )
    for count in COUNTS:
        for region in regions:
            aggregates[f"{count}-{region}"] = int(sum(case[f"{count}-{region}"] for case in per_case))
    mean_dice = np.array([np.mean([case[f"dice-{region}"] for region in regions]) for case in per_case])
    overall = describe(mean_dice, resamples)
    aggregates.update(
        {
            "dice-mean": overall["mean"],
            "dice-mean-ci-low": overall["ci-low"],
            "dice-mean-ci-high": overall["ci-high"],
        }
    )
    edges = np.array(spacings_mm, dtype=np.float64)
    aggregates.update({"spacing-min-mm": float(edges.min()), "spacing-max-mm": float(edges.max())})
    return aggregates
