"""Writes the federation report: the HTML page, report.json (its content), metrics.csv (every number, long) and
the model card (model_card.md, linked from the page).

metrics.csv columns: scope ("site", "pooled" or "overview"), round, site, key, value — one row per number: each
site's aggregates for every validated round (a round without numbers: its "status", then "min-report-cases" when
its validation reply arrived (suppressed, refused), and "reason": the site's own, or why its reply did not arrive
or was dropped), the pooled values per round, and the data overview.
"""

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from models.shared.atomic import atomic_write_json, atomic_write_text
from models.shared.exit_codes import CommandError, ExitCode, errors_as
from models.shared.terminal import make_console
from models.shared.wire import EVALUATE_STATUSES, Status
from server_app.report.content import report_data
from server_app.report.html_page import render_report
from server_app.report.model_card import MODEL_CARD_FILE, model_card
from server_app.run_record.run_folder import read_metrics

REPORT_FILE = "report.html"
REPORT_JSON = "report.json"
METRICS_CSV = "metrics.csv"


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    json: Path
    csv: Path


def write_report(run_dir: Path, out: Path | None = None) -> ReportFiles:
    """Build the report of `run_dir`; the HTML goes to `out` (default RUN_DIR/report.html), the data beside it."""
    data = report_data(run_dir)
    html = out if out is not None else run_dir / REPORT_FILE
    files = ReportFiles(html=html, json=html.parent / REPORT_JSON, csv=html.parent / METRICS_CSV)
    atomic_write_json(files.json, data)
    atomic_write_text(files.csv, metrics_csv(read_metrics(run_dir), data))
    atomic_write_text(files.html, render_report(data))
    atomic_write_text(html.parent / MODEL_CARD_FILE, model_card(run_dir, data))  # report.html links it
    return files


def rebuild_report(run_dir: Path, out: Path | None) -> None:
    """`oncofed report`: write the report of a run folder (BAD_INPUT when it is no folder, NO_USABLE_DATA when it
    holds no validated round) with a spinner on stderr, then say where it is."""
    if not run_dir.is_dir():
        raise CommandError(f"run folder {run_dir} does not exist or is not a folder", ExitCode.BAD_INPUT)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with (
        errors_as(ExitCode.NO_USABLE_DATA, FileNotFoundError),  # no validated round in the folder
        Progress(*columns, console=make_console(stderr=True), transient=True) as progress,
    ):
        progress.add_task(f"writing the report of {run_dir}", total=None)
        files = write_report(run_dir, out)
    make_console().print(
        f"Report: {files.html}\nData: {files.json}, {files.csv}", highlight=False, soft_wrap=True
    )


def metrics_csv(records: list[dict], data: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["scope", "round", "site", "key", "value"])
    for record in sorted(records, key=lambda r: (r["round"], r["site"])):
        if not record["metrics"]:
            writer.writerow(["site", record["round"], record["site"], "status", record.get("status")])
            if record.get("status", Status.SUPPRESSED) in EVALUATE_STATUSES:  # its validation reply arrived
                writer.writerow(
                    [
                        "site",
                        record["round"],
                        record["site"],
                        "min-report-cases",
                        record.get("min_report_cases"),
                    ]
                )
            if record.get("reason"):
                writer.writerow(["site", record["round"], record["site"], "reason", record["reason"]])
            continue
        for key, value in sorted(record["metrics"].items()):
            writer.writerow(["site", record["round"], record["site"], key, value])
    for pooled in data["pooled"]:
        for key, value in sorted(pooled.items()):
            if key not in ("round", "sites"):
                writer.writerow(["pooled", pooled["round"], "", key, value])
    last_round = data["run"]["last_round"]
    for row in data["data_overview"]:
        for key, value in row.items():
            if key not in ("site", "note") and value is not None:
                writer.writerow(["overview", last_round, row["site"], key, value])
    return buffer.getvalue()
