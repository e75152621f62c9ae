"""The report's numbers about how the model was trained, from metrics.jsonl and the run config alone:
strategy and its settings, the local-only baselines, bytes per round, privacy spent, the sites' update norms
(the largest named: an outlier site shows here), and sharp drops of the pooled Dice between rounds.
"""

import itertools
import statistics

from models.shared.run_config import LOCAL_BASELINE, SIM_MIN_LESION_MM3
from models.shared.wire import GAIN_PREFIX, LOCAL_ONLY_PREFIX, MEAN_DICE, Status, baseline_key
from server_app.coordinator_settings import StrategySettings
from server_app.report.site_table import is_suppressed
from server_app.strategies.update_direction import MIN_ALIGNMENT

SHARP_DROP = 0.05
"""A fall of the pooled mean Dice by more than this from one round to the next is flagged in the report."""

STRATEGY_TEXT = {
    "fedavg": "FedAvg: the mean of the sites' weights, weighted by each site's number of training cases",
    "fedprox": "FedProx: the FedAvg mean; each site adds the proximal term μ/2·‖w − w_global‖² to its loss "
    "(μ = {proximal_mu:g})",
    "fedadam": "FedAdam: Adam on the server applied to the averaged update (η = {server_lr:g}, β1 = {beta1:g}, "
    "β2 = {beta2:g}, τ = {tau:g})",
    "fedyogi": "FedYogi: Yogi on the server applied to the averaged update (η = {server_lr:g}, β1 = {beta1:g}, "
    "β2 = {beta2:g}, τ = {tau:g})",
    "fedmedian": "FedMedian: the coordinate-wise median of the sites' weights",
    "fedtrimmedavg": "FedTrimmedAvg: the coordinate-wise mean of the sites' weights without the {trim_beta:g} "
    "largest and smallest fractions",
    "krum": "Krum: the one site's weights closest to the others' (tolerating {num_malicious_nodes} malicious sites)",
    "multikrum": "Multi-Krum: the mean of the sites' weights Krum scores best (tolerating {num_malicious_nodes} "
    "malicious sites)",
}


def training_data(records: list[dict], run_config: dict, pooled: list[dict]) -> dict:
    """{"strategy", "baseline", "traffic", "privacy", "drops"} for report_data. The run config is the one the
    coordinator recorded (config.json): the strategy's settings and, for the methods, the sites' `local-baseline`
    and, in a simulation, `sim-min-lesion-mm3` (a deployed site's own `min-lesion-mm3` is in its conventions)."""
    settings = StrategySettings.from_run_config(run_config)
    return {
        "strategy": {**_strategy(settings), "min_lesion_mm3": SIM_MIN_LESION_MM3.read(run_config)},
        "baseline": _baseline(records, LOCAL_BASELINE.read(run_config)),
        "traffic": _traffic(records, settings.transport_dtype),
        "privacy": _privacy(records, settings),
        "updates": update_norms(records, settings),
        "drops": sharp_drops(pooled),
    }


def update_norms(records: list[dict], settings: StrategySettings) -> dict:
    """The bounds on one site's influence, and the largest update norm a site sent (site, round, norm, and the
    median of all as the yardstick), from each training record's `update-norm`."""
    sent = [r for r in records if isinstance(r.get("update-norm"), int | float)]
    largest = max(sent, key=lambda r: r["update-norm"], default=None)
    norms = sorted(r["update-norm"] for r in sent)
    by_site: dict[str, list[dict]] = {}
    for record in records:
        if isinstance(record.get("update-cosine"), int | float):
            by_site.setdefault(record["site"], []).append(record)
    mean = {site: statistics.fmean(r["update-cosine"] for r in rs) for site, rs in by_site.items()}
    site = min(mean, key=mean.__getitem__, default=None)
    least = min(by_site[site], key=lambda r: r["update-cosine"]) if site is not None else None
    return {
        "min_cosine": settings.update_min_cosine,
        "min_alignment": MIN_ALIGNMENT,
        "least_aligned": {
            "site": least["site"],
            "mean_cosine": mean[least["site"]],
            "rounds": len(by_site[least["site"]]),
            "round": least["round"],
            "cosine": least["update-cosine"],
        }
        if least
        else None,
        "bound": settings.update_norm_bound,
        "max_site_weight": settings.max_site_weight,
        "largest": {"site": largest["site"], "round": largest["round"], "norm": largest["update-norm"]}
        if largest
        else None,
        "median": norms[len(norms) // 2] if norms else None,
    }


def _strategy(settings: StrategySettings) -> dict:
    text = STRATEGY_TEXT[settings.strategy].format(**vars(settings))
    if settings.local_norm:
        text += (
            "; site-local normalization: the norm layers' scale and shift never leave a site, so every site's "
            "validation measures its own personalized model (the shared weights with its own norm layers)"
        )
    return {
        "name": settings.strategy,
        "text": text,
        "local_norm": settings.local_norm,
        "transport_dtype": settings.transport_dtype,
    }


def _baseline(records: list[dict], enabled: bool) -> dict:
    """Per site: global and local-only mean Dice per round, and the last round's paired difference."""
    sites: dict[str, dict] = {}
    for record in sorted(records, key=lambda r: (r["site"], r["round"])):
        site = sites.setdefault(record["site"], {"name": record["site"], "rounds": [], "verdict": None})
        metrics = record["metrics"]
        if is_suppressed(record) or baseline_key(LOCAL_ONLY_PREFIX, "dice", None, "mean") not in metrics:
            site["status"] = Status.SUPPRESSED if is_suppressed(record) else "missing"
            continue
        site["status"] = Status.REPORTED
        site["rounds"].append(
            {
                "round": record["round"],
                "global": metrics[MEAN_DICE],
                "local": metrics[baseline_key(LOCAL_ONLY_PREFIX, "dice", None, "mean")],
                "local_ci": [
                    metrics[baseline_key(LOCAL_ONLY_PREFIX, "dice", None, "ci-low")],
                    metrics[baseline_key(LOCAL_ONLY_PREFIX, "dice", None, "ci-high")],
                ],
                "gain": metrics[baseline_key(GAIN_PREFIX, "dice", None, "mean")],
                "gain_ci": [
                    metrics[baseline_key(GAIN_PREFIX, "dice", None, "ci-low")],
                    metrics[baseline_key(GAIN_PREFIX, "dice", None, "ci-high")],
                ],
                "n_cases": record["n_cases"],
            }
        )
    for site in sites.values():
        if site["rounds"]:
            site["verdict"] = verdict(site["name"], site["rounds"][-1])
    return {"enabled": enabled, "sites": list(sites.values())}


def verdict(site: str, last: dict) -> str:
    """One line: federation helped / did worse at this site when the paired CI excludes 0, else no evidence."""
    gain, (low, high) = last["gain"], last["gain_ci"]
    numbers = f"{gain:+.3f} Dice [{low:+.3f}, {high:+.3f}] at round {last['round']}, n = {last['n_cases']}"
    if last["n_cases"] < 2:
        return f"{site}: no evidence either way, one validation case gives no interval ({numbers})"
    if low > 0:
        return f"federation helped {site}: {numbers}"
    if high < 0:
        return f"{site} did better alone: {numbers}"
    return f"{site}: no evidence of a difference between the global and the local-only model ({numbers})"


def _traffic(records: list[dict], dtype: str) -> dict:
    """Bytes moved per round (all sites, both directions), as measured by the coordinator on the messages."""
    per_round: dict[int, int] = {}
    for record in records:
        if record.get("bytes"):
            per_round[record["round"]] = per_round.get(record["round"], 0) + sum(record["bytes"].values())
    return {"dtype": dtype, "per_round": [{"round": r, "bytes": b} for r, b in sorted(per_round.items())]}


def _privacy(records: list[dict], settings: StrategySettings) -> dict:
    """Central DP settings and ε after each round (from the accountant, filed with every site's record)."""
    epsilons = {r["round"]: r["privacy"]["epsilon"] for r in records if r.get("privacy")}
    return {
        "enabled": settings.dp,
        "noise_multiplier": settings.dp_noise_multiplier,
        "clipping_norm": settings.dp_clipping_norm,
        "delta": settings.dp_delta,
        "epsilon": [{"round": r, "epsilon": e} for r, e in sorted(epsilons.items())],
    }


def sharp_drops(pooled: list[dict]) -> list[dict]:
    """Rounds whose pooled mean Dice fell by more than SHARP_DROP from the round before."""
    shown = [p for p in pooled if p.get(MEAN_DICE) is not None]
    return [
        {"round": after["round"], "from": before[MEAN_DICE], "to": after[MEAN_DICE]}
        for before, after in itertools.pairwise(shown)
        if before[MEAN_DICE] - after[MEAN_DICE] > SHARP_DROP
    ]
