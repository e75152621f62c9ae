"""summary.json: what a coordinator reads first — whether the run completed, sites, per-site first/last results,
participation, best round, models.

`status` is "running" while the ServerApp works, then "completed", or "stopped"/"failed" with `stopped` saying
after which round and why (such a run has no models/final.pt; `oncofed run --resume RUN_DIR` continues it).
`weighted_mean` per round is the pooled evaluation over the sites that reported (server_app.run_record.pooled); a site whose
last validation arrived without numbers has that status ("suppressed", "refused") and no metrics;
`rounds_missed` lists, per site, the rounds its validation did not arrive (models.shared.wire.ABSENT_STATUSES).
"""

from models.shared.wire import ABSENT_STATUSES, Status
from server_app.report.site_table import evaluations, first_and_last
from server_app.run_record.best_model import RULE, BestRound
from server_app.run_record.checkpoints import SELECTION_METRIC
from server_app.run_record.run_folder import COMPLETED, RUNNING


def build_summary(
    records: list[dict],
    pooled: dict[int, dict],
    best: BestRound,
    overviews: dict[str, dict],
    rounds_planned: int,
    wall_time_s: float,
    *,
    status: str,
    last_round: int | None,
    reason: str = "",
) -> dict:
    sites = {
        site: {
            "status": last.get("status", Status.REPORTED),
            "min_report_cases": last.get("min_report_cases"),
            "n_cases": last["n_cases"],
            "first_round": first["round"],
            "last_round": last["round"],
            "first": first["metrics"],
            "last": last["metrics"],
        }
        for site, (first, last) in first_and_last(evaluations(records)).items()
    }
    missed: dict[str, list[int]] = {}
    for record in records:
        if record.get("status") in ABSENT_STATUSES:
            missed.setdefault(record["site"], []).append(record["round"])
    return {
        "status": status,
        "stopped": None if status in (RUNNING, COMPLETED) else {"after_round": last_round, "reason": reason},
        "ended_early": reason if status == COMPLETED and reason else None,
        "rounds_planned": rounds_planned,
        "last_round": last_round,
        "rounds_evaluated": sorted({r["round"] for r in evaluations(records)}),
        "sites": sites,
        "rounds_missed": {site: sorted(set(rounds)) for site, rounds in sorted(missed.items())},
        "site_overview": overviews,
        "weighted_mean": {str(rnd): dict(metrics) for rnd, metrics in sorted(pooled.items())},
        "best": {
            "round": best.round,
            SELECTION_METRIC: best.score,
            "sites": sorted(best.scores),
            "rule": RULE,
            "model": "models/best.pt" if best.round is not None else None,
        },
        "latest_model": "models/latest.pt" if last_round is not None else None,
        "final_model": "models/final.pt" if status == COMPLETED else None,
        "wall_time_s": round(wall_time_s, 1),
    }
