"""Everything the federation report shows, as one JSON-ready dict built from the run folder alone.

Sources: config.json (run config, coordinator software), metrics.jsonl (per site per round: aggregates,
"suppressed"/"refused", or why the site's validation did not arrive), rounds.jsonl (whether each round changed the global
model), summary.json (run status, site overviews, best round; absent when a run was interrupted).
"""

from datetime import UTC, datetime
from pathlib import Path

from models.presets import build_model, get_preset, patch_size
from models.shared.labels import REGION_TITLES
from models.shared.run_config import (
    LOCAL_BASELINE,
    MIN_SITES,
    MODEL_PRESET,
    NUM_SERVER_ROUNDS,
    PATCH_SIZE,
    SIM_DATA,
    SIM_MIN_LESION_MM3,
    TRAINING_SETTINGS,
)
from models.shared.wire import (
    MEAN_DICE,
    MEAN_DICE_CI_HIGH,
    MEAN_DICE_CI_LOW,
    N_SKIPPED,
    NUM_EXAMPLES,
    POLICY_CONVENTIONS,
    POSITION_STATS,
    Overview,
    Status,
    Validation,
)
from server_app.report.cross_site_matrix import cross_site_data
from server_app.report.federation_help import federation_help
from server_app.report.site_table import (
    evaluations,
    first_and_last,
    is_suppressed,
    region_names,
    suppressed_text,
)
from server_app.report.training_summary import training_data
from server_app.run_record.pooled import pool
from server_app.run_record.run_folder import (
    COMPLETED,
    CONFIG_FILE,
    RUNNING,
    SUMMARY_FILE,
    read_json,
    read_metrics,
    read_rounds,
)

METRIC_TITLES = {
    "dice": ("Dice", "", "higher"),
    "hd95": ("HD95", "mm", "lower"),
    "nsd": ("Surface Dice", "", "higher"),
    "avd": ("Abs. volume difference", "mL", "lower"),
    "sensitivity": ("Sensitivity", "", "higher"),
    "precision": ("Precision", "", "higher"),
}
"""models.shared.wire metric → (title, unit, which direction is better); a metric not listed here shows its name."""

REPORT_SETTINGS = (*TRAINING_SETTINGS, LOCAL_BASELINE, SIM_MIN_LESION_MM3)
"""The run settings the methods section lists (models.shared.run_config): how the model was trained, and the sites'
local-only baseline and validation post-processing."""

SMALL_N = 10
"""Below this many cases a percentile-bootstrap interval is known to be too narrow."""


def report_data(run_dir: Path) -> dict:
    """The report's content; raises FileNotFoundError when the folder holds no evaluated round."""
    all_records = read_metrics(run_dir)
    records = evaluations(all_records)
    if not records:
        raise FileNotFoundError(
            f"{run_dir} holds no validation results (no metrics.jsonl records): "
            "not a run folder, or the run stopped before its first validation"
        )
    config, summary = read_json(run_dir / CONFIG_FILE), read_json(run_dir / SUMMARY_FILE)
    run_config = config.get("run_config", {})
    last = first_and_last(records)
    conventions = next((r["conventions"] for r in records if r.get("conventions")), {})
    rounds = sorted({r["round"] for r in records})
    sites = [_site_row(site, last_record) for site, (_, last_record) in last.items()]
    pooled = [_pooled_round(rnd, [r for r in records if r["round"] == rnd]) for rnd in rounds]
    training = training_data(records, run_config, pooled)
    return {
        "run": {
            "folder": run_dir.resolve().name,
            "generated_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "simulation": bool(run_config.get(SIM_DATA.key)),
            "rounds_planned": summary.get("rounds_planned", run_config.get(NUM_SERVER_ROUNDS.key)),
            "rounds_evaluated": rounds,
            "last_round": rounds[-1],
            "best": summary.get("best"),
            "wall_time_s": summary.get("wall_time_s"),
            "status": summary.get("status", "interrupted"),
            "stopped": summary.get("stopped"),
            "ended_early": summary.get("ended_early"),
            "min_sites": run_config.get(MIN_SITES.key),
        },
        "participation": participation(all_records, read_rounds(run_dir)),
        "regions": _regions(region_names(records), conventions),
        "metrics": [_metric(name) for name in conventions.get(Validation.METRICS, ["dice", "hd95"])],
        "sites": sites,
        "rounds": {
            site: [_round_point(r) for r in sorted(rs, key=lambda r: r["round"])]
            for site, rs in _by_site(records).items()
        },
        "pooled": pooled,
        "training": training,
        "federation_help": federation_help(records),
        "cross_site": cross_site_data(run_dir, records),
        "data_overview": [
            _overview(site, last_record, summary.get("site_overview", {}).get(site, {}))
            for site, (_, last_record) in last.items()
        ],
        "methods": _methods(records, conventions, run_config, config.get("software", {}), training),
        "limitations": _limitations(sites, run_config, summary, training),
    }


def participation(records: list[dict], rounds: list[dict]) -> dict:
    """The site × round grid: each cell the site's outcome per phase; each round whether the model changed."""
    grid: dict[str, dict[str, dict]] = {}
    for record in records:
        grid.setdefault(record["site"], {})[str(record["round"])] = {
            "status": record.get("status", Status.REPORTED),
            "reason": record.get("reason", ""),
            "train": record.get("participation", {}).get("train", ""),
            "evaluate": record.get("participation", {}).get("evaluate", ""),
        }
    return {
        "rounds": sorted({r["round"] for r in records}),
        "sites": dict(sorted(grid.items())),
        "model_updated": {
            str(r["round"]): {"updated": r["train"]["aggregated"], "reason": r["train"]["reason"]}
            for r in rounds
            if "train" in r
        },
    }


def _regions(names: list[str], conventions: dict) -> list[dict]:
    labels = conventions.get(Validation.REGION_LABELS) or [""] * len(names)
    return [
        {"name": name, "labels": label, "title": REGION_TITLES.get(name, name)}
        for name, label in zip(names, labels, strict=True)
    ]


def _metric(name: str) -> dict:
    title, unit, better = METRIC_TITLES.get(name, (name, "", ""))
    return {"name": name, "title": title, "unit": unit, "better": better}


def _by_site(records: list[dict]) -> dict[str, list[dict]]:
    by_site: dict[str, list[dict]] = {}
    for record in records:
        by_site.setdefault(record["site"], []).append(record)
    return dict(sorted(by_site.items()))


def _status(record: dict) -> str:
    """REPORTED, or the status under which a site sent no numbers (SUPPRESSED, REFUSED: models.shared.wire.Status)."""
    return str(record.get("status", Status.SUPPRESSED)) if is_suppressed(record) else Status.REPORTED


def _site_row(site: str, record: dict) -> dict:
    suppressed = is_suppressed(record)
    return {
        "name": site,
        "round": record["round"],
        "status": _status(record),
        "note": suppressed_text(record) if suppressed else "",
        "withheld": list(record.get("withheld") or []),
        "min_report_cases": record.get("min_report_cases"),
        "n_cases": record["n_cases"],
        "metrics": record["metrics"],
    }


def _round_point(record: dict) -> dict:
    metrics = record["metrics"]
    return {
        "round": record["round"],
        "status": _status(record),
        MEAN_DICE: metrics.get(MEAN_DICE),
        MEAN_DICE_CI_LOW: metrics.get(MEAN_DICE_CI_LOW),
        MEAN_DICE_CI_HIGH: metrics.get(MEAN_DICE_CI_HIGH),
        "n_cases": record["n_cases"],
    }


def _pooled_round(server_round: int, records: list[dict]) -> dict:
    reported = [r for r in records if not is_suppressed(r)]
    base = {"round": server_round, "sites": [r["site"] for r in reported]}
    if not reported:
        return base
    keys = set.intersection(*(set(r["metrics"]) for r in reported))
    return {
        **base,
        **pool(
            [{k: r["metrics"][k] for k in sorted(keys)} for r in reported], [r["n_cases"] for r in reported]
        ),
    }


def _overview(site: str, record: dict, described: dict) -> dict:
    """Validation counts from the last evaluation; the rest from the site's description (describe). Counts a
    site's policy withheld (between 1 and k − 1) and voxel-spacing ranges (single-case values) are not sent."""
    metrics = record["metrics"]
    train = record.get("train") or {}
    return {
        "site": site,
        "total_cases": described.get(Overview.N_CASES_USABLE),
        "training_cases": train.get(NUM_EXAMPLES),
        "training_note": f"{train['status']} ({train.get('reason', '')})" if "status" in train else "",
        "validation_cases": record["n_cases"],
        "skipped_cases": metrics.get(N_SKIPPED),
        "note": suppressed_text(record) if is_suppressed(record) else "",
        "described": described,
    }


def _methods(
    records: list[dict], conventions: dict, run_config: dict, software: dict, training: dict
) -> dict:
    differing = sorted(
        {
            r["site"]
            for r in records
            if r.get("conventions") and _comparable(r["conventions"]) != _comparable(conventions)
        }
    )
    preset = str(run_config.get(MODEL_PRESET.key, ""))
    model = {}
    if preset:
        spec = get_preset(preset)
        model = {
            "preset": preset,
            "architecture": "MONAI UNet, 3D, affine instance norm",
            "channels": list(spec.channels),
            "strides": list(spec.strides),
            "residual_units": spec.num_res_units,
            "parameters": sum(p.numel() for p in build_model(preset).parameters()),
        }
    return {
        "conventions": conventions,
        "sites_with_other_conventions": differing,
        "site_software": {
            r["site"]: r["conventions"].get(Validation.SOFTWARE, []) for r in records if r.get("conventions")
        },
        "model": model,
        "training": _training(run_config),
        "aggregation": training["strategy"]["text"],
        "coordinator_software": software,
    }


def _training(run_config: dict) -> dict:
    """The training settings of the run; a patch size of 0 (the model preset's) shown as the edge used."""
    training = {s.key: run_config[s.key] for s in REPORT_SETTINGS if s.key in run_config}
    preset = str(run_config.get(MODEL_PRESET.key, ""))
    if training.get(PATCH_SIZE.key) == 0 and preset:
        training[PATCH_SIZE.key] = f"{patch_size(preset, 0)} (the model preset's)"
    return training


def _comparable(conventions: dict) -> dict:
    """Conventions without the software versions and the site's disclosure settings, which may differ without
    changing a metric."""
    return {k: v for k, v in conventions.items() if k != Validation.SOFTWARE and k not in POLICY_CONVENTIONS}


def _limitations(sites: list[dict], run_config: dict, summary: dict, training: dict) -> list[str]:
    notes = []
    suppressed = [f"{s['name']} ({s['note']})" for s in sites if s["status"] != Status.REPORTED]
    reported = [s for s in sites if s["status"] == Status.REPORTED]
    if suppressed:
        notes.append(
            f"{', '.join(suppressed)} sent no validation numbers at their last round under their own "
            "disclosure policy or limits; pooled results cover only the reporting sites."
        )
    withheld = [s["name"] for s in reported if any(w.split()[0] in POSITION_STATS for w in s["withheld"])]
    if withheld:
        notes.append(
            f"Medians and quartiles are withheld at {', '.join(withheld)}: a site sends position statistics only "
            "from its own min-position-cases on (default 10); means and CIs are shown."
        )
    small = [f"{s['name']} (n = {s['n_cases']})" for s in reported if s["n_cases"] < SMALL_N]
    if small:
        notes.append(
            f"Few validation cases at {', '.join(small)}: percentile-bootstrap intervals are too narrow "
            f"below about {SMALL_N} cases; read them as a lower bound on the uncertainty."
        )
    notes += [
        (
            "Confidence intervals cover case sampling within one site only, not differences between hospitals, "
            "scanners or training runs; pooled means have no interval (medians and CIs cannot be pooled exactly)."
        ),
        (
            "Means of HD95 are dominated by cases with an empty mask (penalty distance); read the medians (where a "
            "site sends them) and the empty-mask counts alongside them."
        ),
        (
            "Validation cases are a fixed random split each site made of its own data (no run setting chooses "
            "them), not an external test set; models/best.pt was chosen on these same cases, so its numbers are "
            "optimistic."
        ),
        (
            "HD95 and surface Dice are measured on each site's native grid: coarser voxels limit the distances a site "
            "can resolve, so sites are not directly comparable on them."
        ),
        "The numbers are computed by the sites; the coordinator cannot check them against any image.",
    ]
    if training["strategy"]["local_norm"]:
        notes.append(
            "With site-local normalization each site validated its own personalized model; models/best.pt and "
            "final.pt hold the shared weights with the initial norm layers, and each site's own norm layers exist "
            "only at that site. `site predict` and `oncofed export` refuse these two files; at a site, "
            "WORK/models/global-latest.pt is the last model it validated, with its own norm layers."
        )
    if training["privacy"]["enabled"]:
        notes.append(
            "ε covers the model weights the coordinator released each round (site-level, add-or-remove-one); the "
            "validation aggregates the sites send are not covered by it."
        )
    if training["baseline"]["enabled"]:
        notes.append(
            "Local-only baselines were trained with the same per-round budget as the federation; the comparison "
            "is on each site's own validation cases, which also chose models/best.pt."
        )
    else:
        notes.append(
            "This run has no local-only baseline, so it does not show whether federation helped each site."
        )
    if run_config.get(SIM_DATA.key):
        notes.append("This was a simulation: every site ran on one machine, on data the operator holds.")
    if not summary or summary.get("status") == RUNNING:
        notes.append(
            "The run did not finish (its coordinator stopped): the report shows the rounds that were validated."
        )
    elif summary.get("status") != COMPLETED:
        stopped = summary.get("stopped") or {}
        notes.append(
            f"The run {summary['status']} after round {stopped.get('after_round')} of "
            f"{summary.get('rounds_planned')}: {stopped.get('reason')}. It has no final model."
        )
    if summary.get("ended_early"):
        notes.append(f"The run {summary['ended_early']}: later rounds would not have changed best.pt.")
    missed = summary.get("rounds_missed") or {}
    if missed:
        notes.append(
            "Some sites missed rounds (see Participation): "
            + "; ".join(f"{site}: round {', '.join(map(str, rounds))}" for site, rounds in missed.items())
            + ". Pooled values of those rounds cover the other sites only."
        )
    return notes
