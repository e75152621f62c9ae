""" "Did federation help each site?": per site, the paired difference the site sent at its last validated round and
its 95 % CI, for the report's first paragraph and `oncofed simulate`'s final table.

When the site personalized (run setting `personalize-epochs`), the difference is personalized − local-only
(`personalized-over-local-…`): what the site gets from the federation as it would use it; otherwise global −
local-only (`gain-…`). Both are paired on the same released cases at the site (site_app.learning.local_baseline);
the coordinator only reads them. A site without a local-only baseline at its last round has no row.
"""

from models.shared.wire import (
    GAIN_PREFIX,
    LOCAL_ONLY_PREFIX,
    MEAN_DICE,
    PERSONALIZED_OVER_LOCAL_PREFIX,
    PERSONALIZED_PREFIX,
    baseline_key,
)
from server_app.report.site_table import evaluations, first_and_last, is_suppressed

PERSONALIZED_VS_LOCAL = "personalized − local-only"
GLOBAL_VS_LOCAL = "global − local-only"


def _dice(metrics: dict, prefix: str, stat: str) -> float | None:
    value = metrics.get(baseline_key(prefix, "dice", None, stat))
    return float(value) if value is not None else None


def site_difference(record: dict) -> dict | None:
    """The record's paired difference (mean Dice) with its CI, the two models' means and which comparison it is;
    None without a local-only baseline in it."""
    metrics = record.get("metrics") or {}
    if is_suppressed(record) or _dice(metrics, LOCAL_ONLY_PREFIX, "mean") is None:
        return None
    personalized = _dice(metrics, PERSONALIZED_OVER_LOCAL_PREFIX, "mean") is not None
    prefix = PERSONALIZED_OVER_LOCAL_PREFIX if personalized else GAIN_PREFIX
    if _dice(metrics, prefix, "mean") is None:
        return None
    return {
        "site": record["site"],
        "round": record["round"],
        "n_cases": record.get("n_cases"),
        "comparison": PERSONALIZED_VS_LOCAL if personalized else GLOBAL_VS_LOCAL,
        "model": _dice(metrics, PERSONALIZED_PREFIX, "mean") if personalized else float(metrics[MEAN_DICE]),
        "local": _dice(metrics, LOCAL_ONLY_PREFIX, "mean"),
        "difference": _dice(metrics, prefix, "mean"),
        "ci": [_dice(metrics, prefix, "ci-low"), _dice(metrics, prefix, "ci-high")],
    }


def federation_help(records: list[dict]) -> list[dict]:
    """One row per site with a local-only baseline at its last validated round, with its one-line answer."""
    rows = []
    for _, last in first_and_last(evaluations(records)).values():
        row = site_difference(last)
        if row is not None:
            rows.append({**row, "answer": answer(row)})
    return rows


def answer(row: dict) -> str:
    """One sentence: helped, did better alone, or no evidence, from whether the paired CI excludes 0."""
    low, high = row["ci"]
    numbers = (
        f"{row['comparison']} {row['difference']:+.3f} Dice [95 % CI {low:+.3f}, {high:+.3f}], "
        f"n = {row['n_cases']}"
    )
    if (row["n_cases"] or 0) < 2:
        return f"{row['site']}: no evidence either way, one case gives no interval ({numbers})"
    if low > 0:
        return f"yes at {row['site']} ({numbers})"
    if high < 0:
        return f"no at {row['site']}, it did better alone ({numbers})"
    return f"no evidence either way at {row['site']} ({numbers})"
