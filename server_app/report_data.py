"""Everything the federation report shows, as one JSON-ready dict built from the run folder alone.

Sources: config.json (run config, coordinator software), metrics.jsonl (per site per round: aggregates or
"suppressed"), summary.json (site overviews, best round; absent when a run was interrupted).
"""

from datetime import UTC, datetime
from pathlib import Path

from models.presets import build_model, get_preset
from server_app.pooled import pool
from server_app.report_training import training_data
from server_app.run_folder import CONFIG_FILE, SUMMARY_FILE, read_json, read_metrics
from server_app.site_table import first_and_last, is_suppressed, region_names, suppressed_text

METRIC_TITLES = {
    "dice": ("Dice", "", "higher"),
    "hd95": ("HD95", "mm", "lower"),
    "nsd": ("Surface Dice", "", "higher"),
    "avd": ("Abs. volume difference", "mL", "lower"),
    "sensitivity": ("Sensitivity", "", "higher"),
    "precision": ("Precision", "", "higher"),
}
"""metric → (title, unit, which direction is better); a metric the sites send but not listed here shows its key."""

REGION_TITLES = {
    "wt": "whole tumor",
    "tc": "tumor core",
    "et": "enhancing tumor",
    "label1": "necrotic core",
    "label2": "edema",
    "label3": "enhancing tumor",
}

TRAINING_KEYS = (
    "num-server-rounds",
    "strategy",
    "local-epochs",
    "learning-rate",
    "batch-size",
    "patch-size",
    "samples-per-case",
    "spacing-mm",
    "val-fraction",
    "model-preset",
    "min-sites",
    "seed",
    "local-norm",
    "local-baseline",
    "transport-dtype",
    "min-lesion-mm3",
)

SMALL_N = 10
"""Below this many cases a percentile-bootstrap interval is known to be too narrow."""


def report_data(run_dir: Path) -> dict:
    """The report's content; raises FileNotFoundError when the folder holds no evaluated round."""
    records = read_metrics(run_dir)
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
            "simulation": bool(run_config.get("sim-data")),
            "rounds_planned": summary.get("rounds_planned", run_config.get("num-server-rounds")),
            "rounds_evaluated": rounds,
            "last_round": rounds[-1],
            "best": summary.get("best"),
            "wall_time_s": summary.get("wall_time_s"),
        },
        "regions": _regions(region_names(records), conventions),
        "metrics": [_metric(name) for name in conventions.get("metrics", ["dice", "hd95"])],
        "sites": sites,
        "rounds": {
            site: [_round_point(r) for r in sorted(rs, key=lambda r: r["round"])]
            for site, rs in _by_site(records).items()
        },
        "pooled": pooled,
        "training": training,
        "data_overview": [
            _overview(site, last_record, summary.get("site_overview", {}).get(site, {}))
            for site, (_, last_record) in last.items()
        ],
        "methods": _methods(records, conventions, run_config, config.get("software", {}), training),
        "limitations": _limitations(sites, run_config, summary, training),
    }


def _regions(names: list[str], conventions: dict) -> list[dict]:
    labels = conventions.get("region-labels") or [""] * len(names)
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


def _site_row(site: str, record: dict) -> dict:
    suppressed = is_suppressed(record)
    return {
        "name": site,
        "round": record["round"],
        "status": "suppressed" if suppressed else "reported",
        "note": suppressed_text(record) if suppressed else "",
        "min_report_cases": record.get("min_report_cases"),
        "n_cases": record["n_cases"],
        "metrics": record["metrics"],
    }


def _round_point(record: dict) -> dict:
    metrics = record["metrics"]
    return {
        "round": record["round"],
        "status": "suppressed" if is_suppressed(record) else "reported",
        "dice-mean": metrics.get("dice-mean"),
        "dice-mean-ci-low": metrics.get("dice-mean-ci-low"),
        "dice-mean-ci-high": metrics.get("dice-mean-ci-high"),
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
    """Validation counts and voxel edges from the last evaluation; the rest from the site's description (describe)."""
    metrics = record["metrics"]
    train = record.get("train") or {}
    return {
        "site": site,
        "total_cases": described.get("n-cases", described.get("n-cases-usable")),
        "training_cases": train.get("num-examples"),
        "validation_cases": record["n_cases"],
        "skipped_cases": metrics.get("n-skipped"),
        "spacing_min_mm": metrics.get("spacing-min-mm"),
        "spacing_max_mm": metrics.get("spacing-max-mm"),
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
    preset = str(run_config.get("model-preset", ""))
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
            r["site"]: r["conventions"].get("software", []) for r in records if r.get("conventions")
        },
        "model": model,
        "training": {key: run_config[key] for key in TRAINING_KEYS if key in run_config},
        "aggregation": training["strategy"]["text"],
        "coordinator_software": software,
    }


def _comparable(conventions: dict) -> dict:
    """Conventions without the software versions, which may differ without changing a metric."""
    return {k: v for k, v in conventions.items() if k != "software"}


def _limitations(sites: list[dict], run_config: dict, summary: dict, training: dict) -> list[str]:
    notes = []
    suppressed = [s["name"] for s in sites if s["status"] == "suppressed"]
    reported = [s for s in sites if s["status"] == "reported"]
    if suppressed:
        notes.append(
            f"{', '.join(suppressed)} had fewer validation cases than their own minimum and sent no "
            "validation numbers; pooled results cover only the reporting sites."
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
            "Means of HD95 are dominated by cases with an empty mask (penalty distance); read the medians and the "
            "empty-mask counts alongside them."
        ),
        (
            "Validation cases are a fixed random split of each site's own data, not an external test set; "
            "models/best.pt was chosen on these same cases, so its numbers are optimistic."
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
            "only at that site."
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
    if run_config.get("sim-data"):
        notes.append("This was a simulation: every site ran on one machine, on data the operator holds.")
    if not summary:
        notes.append(
            "The run did not finish (no summary.json): the report shows the rounds that were validated."
        )
    return notes
