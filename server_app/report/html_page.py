"""The federation report as one self-contained, printable HTML page: report_data's dict rendered through the
Jinja2 templates of page_templates (autoescaped), with inline CSS, charts as base64 PNG data URIs, no script and
no external resource.

This module holds what the templates cannot: the charts (drawn here, inlined as data URIs), the number formats
(filters) and the few lookups into a site's flat metric keys (globals).
"""

import base64
from collections.abc import Iterable
from functools import cache

from jinja2 import Environment

from models.shared.node_config import (
    DEFAULT_MIN_POSITION_CASES,
    DEFAULT_MIN_REPORT_CASES,
    DEFAULT_MIN_TRAIN_CASES,
    NodeConfig,
)
from models.shared.wire import (
    COUNTS,
    EVALUATE_STATUSES,
    MEAN_DICE,
    MEAN_DICE_CI_HIGH,
    MEAN_DICE_CI_LOW,
    N_CASES,
    STATS,
    Status,
    Validation,
    region_key,
    stat_key,
)
from server_app.report import charts as report_charts
from server_app.report.federation_help import PERSONALIZED_VS_LOCAL
from server_app.report.model_card import MODEL_CARD_FILE
from server_app.report.page_templates import page_environment
from server_app.run_record.run_folder import COMPLETED

DISTRIBUTION_METRICS = ("dice", "hd95", "nsd")
"""The metrics whose per-site distributions are drawn (the first metric when the sites measured none of them)."""


def render_report(data: dict) -> str:
    """The whole page; every number comes from `data` (content.report_data)."""
    return (
        _environment()
        .get_template("report.html")
        .render(data=data, charts=_charts(data), model_card=MODEL_CARD_FILE)
    )


def _charts(data: dict) -> dict:
    """The page's charts as data URIs: Dice over rounds, one distribution per shown metric, the baselines."""
    shown = [m for m in data["metrics"] if m["name"] in DISTRIBUTION_METRICS] or data["metrics"][:1]
    baseline = any(site["rounds"] for site in data["training"]["baseline"]["sites"])
    return {
        "rounds": _data_uri(report_charts.dice_over_rounds(data)),
        "distributions": [
            {"metric": metric, "src": _data_uri(report_charts.distributions(data, metric))}
            for metric in shown
        ],
        "baseline": _data_uri(report_charts.baseline_curves(data)) if baseline else None,
    }


def _data_uri(png: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(png).decode('ascii')}"


@cache
def _environment() -> Environment:
    environment = page_environment()
    environment.filters.update(
        num=num,
        signed=lambda value: f"{value:+.3f}",
        g=lambda value: f"{value:g}",
        thousands=lambda value: f"{value:,}",
        megabytes=lambda n_bytes: f"{n_bytes / 1e6:.2f} MB",
        plural=plural,
        percent=lambda share: "—" if share is None else f"{100 * share:g} %",
        whole=lambda value: "—" if value is None else str(int(value)),
        plain=lambda value: f"{value:g}" if isinstance(value, int | float) else str(value),
        digits=lambda metric: {"hd95": 1, "avd": 2}.get(metric, 3),
        by_key=by_key,
    )
    environment.globals.update(
        stats=lambda metrics, metric, region: {s: metrics.get(stat_key(metric, region, s)) for s in STATS},
        counts=region_counts,
        phase_notes=phase_notes,
        REPORTED=Status.REPORTED,
        PERSONALIZED_VS_LOCAL=PERSONALIZED_VS_LOCAL,
        COMPLETED=COMPLETED,
        EVALUATE_STATUSES=EVALUATE_STATUSES,
        MEAN_DICE=MEAN_DICE,
        MEAN_DICE_CI_LOW=MEAN_DICE_CI_LOW,
        MEAN_DICE_CI_HIGH=MEAN_DICE_CI_HIGH,
        N_CASES=N_CASES,
        Validation=Validation,
        NodeConfig=NodeConfig,
        DEFAULT_MIN_REPORT_CASES=DEFAULT_MIN_REPORT_CASES,
        DEFAULT_MIN_TRAIN_CASES=DEFAULT_MIN_TRAIN_CASES,
        DEFAULT_MIN_POSITION_CASES=DEFAULT_MIN_POSITION_CASES,
    )
    return environment


def num(value: float | None, digits: int = 3) -> str:
    """A number to `digits` decimals, "—" when the site sent none."""
    return "—" if value is None else f"{value:.{digits}f}"


def region_counts(metrics: dict[str, object], region: str) -> dict[str, object] | None:
    """The site's case and lesion counts for `region`; None when its reply carried none (they are optional)."""
    keys = {count: region_key(count, region) for count in COUNTS}
    if not all(key in metrics for key in keys.values()):
        return None
    return {count: metrics[key] for count, key in keys.items()}


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def by_key(items: Iterable[dict], key: str) -> dict:
    """Rows keyed by one of their fields (a round's points by their round)."""
    return {item[key]: item for item in items}


def phase_notes(cell: dict) -> list[str]:
    """A participation cell's phases that did not simply take part: "train declined (n < 5)"."""
    return [
        f"{name} {text}"
        for name, text in (("train", cell["train"]), ("evaluate", cell["evaluate"]))
        if text and text not in (Status.TOOK_PART, Status.NOT_ASKED)
    ]
