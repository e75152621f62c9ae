"""What of a run folder goes to MLflow: parameters, each completed round's metrics, the final artifacts; read from
the run folder's files alone, so every sync (after a round, at the end, after a resume) sees what the ServerApp wrote.

Only released numbers: a site's metrics are those of its metrics.jsonl records, which hold exactly what its
disclosure policy let leave (a suppressed or refused site's record has none; `withheld` lists names, never values,
and is not logged). Metric names: `pooled/<key>` (summary.json's case-weighted means and summed counts),
`site/<site>/<key>` (its validation aggregates, n-cases among them), `site/<site>/train/<key>` (its training metrics),
`site/<site>/bytes/<direction>`, `bytes/<direction>` (all sites), `dp/epsilon` (central DP only),
`round/sites-reported` and `round/model-updated`; the step is the round.
"""

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from models.shared.run_config import SETTINGS_BY_KEY, TRACKING_URI, Owner
from models.shared.wire import Status
from server_app.app_identity import read_app_identity
from server_app.coordinator_settings import StrategySettings
from server_app.run_record.run_folder import (
    CONFIG_FILE,
    SUMMARY_FILE,
    read_json,
    read_metrics,
    read_rounds,
)

PARAM_OWNERS = (Owner.COORDINATOR, Owner.SHARED)
"""The run settings logged as parameters: the coordinator's and the shared ones (the sites' are theirs)."""
NOT_PARAMS = (TRACKING_URI.key,)
"""Where the parameters go is not one of them: a tracking URI may carry credentials."""
ARTIFACTS = ("report.html", "report.json", "metrics.csv", "model_card.md", "summary.json", "models/best.pt")
"""Files logged once the run is no longer running (each again only when its content changed, e.g. after a resume)."""
_NOT_IN_A_NAME = re.compile(r"[^\w.\- ]")


@dataclass(frozen=True)
class RoundValues:
    round: int
    timestamp_ms: int
    """When the round ended (rounds.jsonl): the same on every sync, so a value logged twice is one value."""
    metrics: dict[str, float]


def metric_name(*parts: str) -> str:
    """An MLflow metric name from parts (a site's name among them) with characters MLflow refuses replaced."""
    cleaned = [_NOT_IN_A_NAME.sub("_", part) for part in parts]
    return "/".join(part if part.strip(".") else f"_{part}" for part in cleaned)[:250]


def run_params(run_dir: Path) -> dict[str, str]:
    """Every coordinator-owned and shared run setting as the run recorded it (config.json), the app bundle's hash
    and the strategy in words."""
    config = read_json(run_dir / CONFIG_FILE).get("run_config", {})
    params = {
        key: _text(value)
        for key, value in config.items()
        if key in SETTINGS_BY_KEY and SETTINGS_BY_KEY[key].owner in PARAM_OWNERS and key not in NOT_PARAMS
    }
    params["fab-sha256"] = read_app_identity(run_dir).get("fab_sha256", "") or "unknown"
    params["strategy-description"] = strategy_description(config)
    return params


def strategy_description(run_config: dict) -> str:
    """The strategy as the report names it, with central DP when it is on."""
    from server_app.report.training_summary import STRATEGY_TEXT

    settings = StrategySettings.from_run_config(run_config)
    text = STRATEGY_TEXT[settings.strategy].format(**vars(settings))
    if settings.dp:
        text += (
            f"; central DP (noise multiplier {settings.dp_noise_multiplier:g}, clipping norm"
            f" {settings.dp_clipping_norm:g}, δ {settings.dp_delta:g})"
        )
    return text


def run_tags(run_dir: Path) -> dict[str, str]:
    """Tags, which (unlike parameters) may change: the run folder, the app of the latest (re)start, resumes."""
    config = read_json(run_dir / CONFIG_FILE)
    software = config.get("software", {})
    return {
        "oncofed.run-dir": str(run_dir.resolve()),
        "oncofed.fab-sha256": read_app_identity(run_dir).get("fab_sha256", ""),
        "oncofed.resumed": str(len(config.get("resumed", []))),
        **{f"oncofed.software.{name}": str(version) for name, version in software.items()},
    }


def run_status(run_dir: Path) -> tuple[str, int | None]:
    """summary.json's status and last completed round (None: not even round 0)."""
    summary = read_json(run_dir / SUMMARY_FILE)
    return str(summary.get("status", "running")), summary.get("last_round")


def round_values(run_dir: Path, after: int | None, through: int) -> list[RoundValues]:
    """The metrics of each round in (after, through]: only completed rounds (a round under way is not final)."""
    first = 0 if after is None else after + 1
    records = read_metrics(run_dir)
    rounds = {record["round"]: record for record in read_rounds(run_dir)}
    pooled = read_json(run_dir / SUMMARY_FILE).get("weighted_mean", {})
    return [
        RoundValues(
            server_round,
            _timestamp_ms(rounds.get(server_round, {})),
            _round_metrics(
                [r for r in records if r["round"] == server_round],
                rounds.get(server_round, {}),
                pooled.get(str(server_round), {}),
            ),
        )
        for server_round in range(first, through + 1)
    ]


def _round_metrics(records: list[dict], round_record: dict, pooled: dict) -> dict[str, float]:
    metrics = {metric_name("pooled", key): value for key, value in _numbers(pooled).items()}
    totals: dict[str, float] = {}
    for record in records:
        site = record["site"]
        metrics |= {metric_name("site", site, key): v for key, v in _numbers(record.get("metrics")).items()}
        train = record.get("train")
        metrics |= {metric_name("site", site, "train", key): v for key, v in _numbers(train).items()}
        for direction, n_bytes in _numbers(record.get("bytes")).items():
            metrics[metric_name("site", site, "bytes", direction)] = n_bytes
            totals[direction] = totals.get(direction, 0.0) + n_bytes
        privacy = record.get("privacy") or {}
        if _is_number(privacy.get("epsilon")):
            metrics[metric_name("dp", "epsilon")] = float(privacy["epsilon"])
    metrics |= {metric_name("bytes", direction): total for direction, total in totals.items()}
    metrics[metric_name("round", "sites-reported")] = float(
        sum(r.get("status") == Status.REPORTED for r in records)
    )
    aggregated = (round_record.get("train") or {}).get("aggregated")
    if isinstance(aggregated, bool):
        metrics[metric_name("round", "model-updated")] = float(aggregated)
    return metrics


def final_artifacts(run_dir: Path) -> list[Path]:
    """The ARTIFACTS the run folder holds."""
    return [run_dir / name for name in ARTIFACTS if (run_dir / name).is_file()]


def _numbers(values: dict | None) -> dict[str, float]:
    return {key: float(value) for key, value in (values or {}).items() if _is_number(value)}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _timestamp_ms(round_record: dict) -> int:
    ended = round_record.get("ended_utc") or round_record.get("started_utc")
    return int(datetime.fromisoformat(ended).timestamp() * 1000) if ended else 0
