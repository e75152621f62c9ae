"""summary.json: what a coordinator reads first — sites, per-site first/last results, best round, models.

`weighted_mean` per round is the pooled evaluation over the sites that reported (server_app.pooled); a site
whose last round was suppressed has status "suppressed" and no metrics.
"""

from flwr.app import MetricRecord

from models.wire import REPORTED
from server_app.checkpoints import SELECTION_METRIC, Checkpointer
from server_app.site_table import first_and_last


def build_summary(
    records: list[dict],
    weighted: dict[int, MetricRecord],
    checkpointer: Checkpointer,
    overviews: dict[str, dict],
    rounds_planned: int,
    wall_time_s: float,
) -> dict:
    sites = {
        site: {
            "status": last.get("status", REPORTED),
            "min_report_cases": last.get("min_report_cases"),
            "n_cases": last["n_cases"],
            "first_round": first["round"],
            "last_round": last["round"],
            "first": first["metrics"],
            "last": last["metrics"],
        }
        for site, (first, last) in first_and_last(records).items()
    }
    return {
        "rounds_planned": rounds_planned,
        "rounds_evaluated": sorted({r["round"] for r in records}),
        "sites": sites,
        "site_overview": overviews,
        "weighted_mean": {str(rnd): dict(metrics) for rnd, metrics in sorted(weighted.items())},
        "best": {
            "round": checkpointer.best_round,
            SELECTION_METRIC: checkpointer.best_score if checkpointer.best_round is not None else None,
            "model": "models/best.pt",
        },
        "final_model": "models/final.pt",
        "wall_time_s": round(wall_time_s, 1),
    }
