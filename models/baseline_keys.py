"""Metric keys of the local-only baseline in an evaluate reply (run config `local-baseline`); both sides use them.

Per region r and metric m in BASELINE_METRICS, for the site's local-only model:
    local-{m}-{r}-mean, local-{m}-{r}-ci-low, local-{m}-{r}-ci-high
and for the paired difference global − local-only on the same validation cases (paired bootstrap CI):
    gain-{m}-{r}-mean, gain-{m}-{r}-ci-low, gain-{m}-{r}-ci-high
plus the same three statistics of the mean Dice over regions: local-dice-mean…, gain-dice-mean…
A positive Dice gain (a negative HD95 gain) means the federation's model did better on this site's cases.
"""

LOCAL_PREFIX = "local-"
GAIN_PREFIX = "gain-"
BASELINE_METRICS = ("dice", "hd95")
BASELINE_STATS = ("mean", "ci-low", "ci-high")


def baseline_key(prefix: str, metric: str, region: str | None, stat: str) -> str:
    """baseline_key(GAIN_PREFIX, "dice", "wt", "ci-low") → "gain-dice-wt-ci-low"; region None: the mean over
    regions, named like the site's own "dice-mean" / "dice-mean-ci-low" → "gain-dice-mean-ci-low"."""
    if region:
        return f"{prefix}{metric}-{region}-{stat}"
    return f"{prefix}{metric}-mean" if stat == "mean" else f"{prefix}{metric}-mean-{stat}"
