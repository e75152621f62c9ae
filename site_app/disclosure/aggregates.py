"""The aggregates of a site's per-case metrics: the only validation numbers that may leave the site.

In models.shared.wire's key grammar, under the disclosure policy (site_app.disclosure.policy): for every metric in
wire.METRICS and region, the mean and a 95 % percentile-bootstrap CI of the mean (R4), and, from
`min_position_cases` cases on, the median and quartiles (wire.POSITION_STATS) as Harrell-Davis estimates (R3);
every statistic rounded to its metric's precision (R5). For every count in wire.COUNTS and region, the sum over
cases. Also the mean Dice over regions (`dice-mean`, with its CI) and the case count. No minimum, maximum or other
single-case value (R2), so no voxel-spacing range either.
"""

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats.mstats import hdquantiles

from models.shared.wire import (
    COUNTS,
    MEAN_DICE,
    MEAN_DICE_CI_HIGH,
    MEAN_DICE_CI_LOW,
    METRICS,
    N_CASES,
    region_key,
    stat_key,
)
from site_app.disclosure.policy import round_statistic

BOOTSTRAP_RESAMPLES = 2000
CI_LEVEL = 0.95


def bootstrap_indices(n_cases: int, seed: int) -> np.ndarray:
    """(BOOTSTRAP_RESAMPLES, n_cases) case indices drawn with replacement; shared by every metric (paired)."""
    return np.random.default_rng(seed).integers(0, n_cases, size=(BOOTSTRAP_RESAMPLES, n_cases))


def position_estimates(values: np.ndarray) -> dict[str, float]:
    """Harrell-Davis estimates of the quartiles: weighted means of all order statistics (positive weights)."""
    q1, median, q3 = np.asarray(hdquantiles(values, prob=[0.25, 0.5, 0.75]), dtype=np.float64)
    return {"median": float(median), "q1": float(q1), "q3": float(q3)}


def describe(values: np.ndarray, resamples: np.ndarray, with_position: bool) -> dict[str, float]:
    """The stats of wire.STATS for one metric's per-case values, unrounded: mean, the percentile-bootstrap CI of
    the mean and, when `with_position`, median and quartiles (wire.POSITION_STATS)."""
    tail = (1.0 - CI_LEVEL) / 2.0
    low, high = np.quantile(values[resamples].mean(axis=1), [tail, 1.0 - tail])
    stats = {"mean": float(values.mean()), "ci-low": float(low), "ci-high": float(high)}
    return {**stats, **position_estimates(values)} if with_position else stats


def site_aggregates(
    per_case: Sequence[Mapping[str, float]], regions: Sequence[str], seed: int, min_position_cases: int
) -> dict[str, float | int]:
    """Aggregates over a site's validation cases (per_case from metrics.case_metrics, in any order), as released."""
    if not per_case:
        raise ValueError("no validation case to aggregate")
    resamples = bootstrap_indices(len(per_case), seed)
    with_position = len(per_case) >= min_position_cases
    aggregates: dict[str, float | int] = {N_CASES: len(per_case)}
    for metric in METRICS:
        for region in regions:
            values = np.array([case[region_key(metric, region)] for case in per_case], dtype=np.float64)
            aggregates.update(
                {
                    stat_key(metric, region, stat): round_statistic(metric, v)
                    for stat, v in describe(values, resamples, with_position).items()
                }
            )
    for count in COUNTS:
        for region in regions:
            key = region_key(count, region)
            aggregates[key] = int(sum(case[key] for case in per_case))
    mean_dice = np.array([np.mean([case[region_key("dice", r)] for r in regions]) for case in per_case])
    overall = describe(mean_dice, resamples, with_position=False)
    aggregates.update(
        {
            key: round_statistic("dice", overall[stat])
            for key, stat in (
                (MEAN_DICE, "mean"),
                (MEAN_DICE_CI_LOW, "ci-low"),
                (MEAN_DICE_CI_HIGH, "ci-high"),
            )
        }
    )
    return aggregates
