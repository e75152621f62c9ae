"""The aggregates of a site's per-case metrics: the only validation numbers that may leave the site.

In models.wire's key grammar: for every metric in wire.METRICS and region, each stat in wire.STATS (mean, median,
q1, q3 with linear interpolation, numpy's default, and a 95 % percentile-bootstrap CI of the mean); for every
count in wire.COUNTS and region, the sum over cases. Also the mean Dice over regions (`dice-mean`, with its CI),
the case count and the range of native voxel edges.
"""

from collections.abc import Mapping, Sequence

import numpy as np

from models.wire import (
    COUNTS,
    MEAN_DICE,
    MEAN_DICE_CI_HIGH,
    MEAN_DICE_CI_LOW,
    METRICS,
    N_CASES,
    SPACING_MAX_MM,
    SPACING_MIN_MM,
    region_key,
    stat_key,
)

BOOTSTRAP_RESAMPLES = 2000
CI_LEVEL = 0.95


def bootstrap_indices(n_cases: int, seed: int) -> np.ndarray:
    """(BOOTSTRAP_RESAMPLES, n_cases) case indices drawn with replacement; shared by every metric (paired)."""
    return np.random.default_rng(seed).integers(0, n_cases, size=(BOOTSTRAP_RESAMPLES, n_cases))


def describe(values: np.ndarray, resamples: np.ndarray) -> dict[str, float]:
    """Every stat of wire.STATS for one metric's per-case values (CI: percentile bootstrap of the mean)."""
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
    aggregates: dict[str, float | int] = {N_CASES: len(per_case)}
    for metric in METRICS:
        for region in regions:
            values = np.array([case[region_key(metric, region)] for case in per_case], dtype=np.float64)
            aggregates.update(
                {stat_key(metric, region, stat): v for stat, v in describe(values, resamples).items()}
            )
    for count in COUNTS:
        for region in regions:
            key = region_key(count, region)
            aggregates[key] = int(sum(case[key] for case in per_case))
    mean_dice = np.array([np.mean([case[region_key("dice", r)] for r in regions]) for case in per_case])
    overall = describe(mean_dice, resamples)
    aggregates.update(
        {
            MEAN_DICE: overall["mean"],
            MEAN_DICE_CI_LOW: overall["ci-low"],
            MEAN_DICE_CI_HIGH: overall["ci-high"],
        }
    )
    edges = np.array(spacings_mm, dtype=np.float64)
    aggregates.update({SPACING_MIN_MM: float(edges.min()), SPACING_MAX_MM: float(edges.max())})
    return aggregates
