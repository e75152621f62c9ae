"""The site-local report: per-case metrics and overlays for the site's own validation cases, worst case first.

Written only into the site's work folder (<work>/reports/site-report.html and per-case.csv) and never sent:
it names cases and shows their images. The model is the last global model the site validated, or any
checkpoint (models.weights format) given; the validation cases and settings are those of the site's last
validation (site_app.learning.work_records).
"""

import base64
import csv
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from data_prep.errors import SiteDataError
from models.presets import build_model
from models.shared.atomic import atomic_write_text
from models.shared.exit_codes import CommandError, ExitCode, errors_as
from models.shared.terminal import make_console
from models.shared.wire import COUNTS, METRICS, region_key
from models.weights import load_checkpoint
from site_app.learning.metrics import metric_settings
from site_app.learning.site_data import load_site_cases
from site_app.learning.validation import CaseEvaluation, evaluate_case
from site_app.learning.work_records import LATEST_MODEL, read_validation_context
from site_app.site_log import site_logger
from site_app.tools.overlays import overlay_png
from site_app.tools.site_report_template import render_site_page

REPORT_FOLDER = Path("reports")
DIGITS = {"hd95": 1, "avd": 2}


@dataclass(frozen=True)
class SiteReportFiles:
    html: Path
    csv: Path
    n_cases: int
    n_failed: int


@dataclass(frozen=True)
class CaseRow:
    """A validated case with its overlay, or a case that could not be validated and why."""

    case_id: str
    evaluation: CaseEvaluation | None
    overlay: bytes
    problem: str


def mean_dice(metrics: Mapping[str, float], regions: Mapping[str, tuple[int, ...]]) -> float:
    return sum(metrics[f"dice-{region}"] for region in regions) / len(regions)


def worst_first(rows: list[CaseRow], regions: Mapping[str, tuple[int, ...]]) -> list[CaseRow]:
    """Cases that failed first, then by mean Dice over regions (lowest first), then by largest HD95."""

    def key(row: CaseRow) -> tuple[float, float]:
        if row.evaluation is None:
            return (-1.0, 0.0)
        metrics = row.evaluation.metrics
        return (mean_dice(metrics, regions), -max(metrics[f"hd95-{region}"] for region in regions))

    return sorted(rows, key=key)


def report_site(work: Path, model: Path | None) -> None:
    """`oncofed site report`: validate with a progress bar on stderr, write the report, say where it is.
    NO_USABLE_DATA when the site never validated (or its last global model is gone), BAD_INPUT for a missing
    folder or checkpoint, or when the data folder the site validated on is gone."""
    if not work.is_dir():
        raise CommandError(
            f"work folder {work} does not exist or is not a folder; give the site's work-path",
            ExitCode.BAD_INPUT,
        )
    if model is not None and not model.is_file():
        raise CommandError(f"model checkpoint {model} does not exist", ExitCode.BAD_INPUT)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with (
        errors_as(ExitCode.NO_USABLE_DATA, FileNotFoundError),
        errors_as(ExitCode.BAD_INPUT, SiteDataError),
        Progress(*columns, console=make_console(stderr=True), transient=True) as progress,
    ):
        task = progress.add_task("validating cases", total=None)
        files = write_site_report(
            work, model, lambda done, total: progress.update(task, completed=done, total=total)
        )
    failed = f", {files.n_failed} could not be validated (listed in the report)" if files.n_failed else ""
    make_console().print(
        f"{files.n_cases} cases{failed}\nReport (stays at this site): {files.html}\nPer case: {files.csv}",
        highlight=False,
        soft_wrap=True,
    )


def write_site_report(
    work: Path, model_path: Path | None, on_progress: Callable[[int, int], None] = lambda done, total: None
) -> SiteReportFiles:
    """Validate the site's validation cases with the model and write the report into <work>/reports."""
    work = work.resolve()
    context = read_validation_context(work)
    settings = context.settings
    regions = settings.regions
    model_file = model_path if model_path is not None else work / LATEST_MODEL
    if not model_file.is_file():
        raise FileNotFoundError(f"model checkpoint {model_file} does not exist")
    state, meta = load_checkpoint(model_file)
    model = build_model(str(meta["model_preset"]))
    model.load_state_dict(state)
    cases = load_site_cases(context.site, settings.pipeline, None, site_logger(work))  # the site's own split

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for done, item in enumerate(cases.val):
        on_progress(done, len(cases.val))
        try:
            evaluation = evaluate_case(model, item, settings.pipeline, regions, device)
        except Exception as error:  # noqa: BLE001 - the report lists the case and the reason instead
            rows.append(CaseRow(str(item["case_id"]), None, b"", f"{type(error).__name__}: {error}"))
            continue
        title = f"{evaluation.case_id}: mean Dice {mean_dice(evaluation.metrics, regions):.3f}"
        overlay = overlay_png(evaluation.image, evaluation.truth, evaluation.prediction, regions, title)
        rows.append(CaseRow(evaluation.case_id, evaluation, overlay, ""))
    on_progress(len(cases.val), len(cases.val))

    ordered = worst_first(rows, regions)
    folder = work / REPORT_FOLDER
    files = SiteReportFiles(
        html=folder / "site-report.html",
        csv=folder / "per-case.csv",
        n_cases=len(rows),
        n_failed=sum(row.evaluation is None for row in rows),
    )
    atomic_write_text(files.csv, per_case_csv(ordered, regions))
    header = {
        "site": context.site.name,
        "model": str(model_file),
        "model round": str(meta.get("round", "—")),
        "settings of round": str(context.server_round),
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    atomic_write_text(files.html, render_site_report(ordered, regions, header))
    return files


def per_case_csv(rows: list[CaseRow], regions: Mapping[str, tuple[int, ...]]) -> str:
    keys = [region_key(m, r) for m in (*METRICS, *COUNTS) for r in regions]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "case_id", "mean_dice", *keys, "spacing_mm", "problem"])
    for rank, row in enumerate(rows, start=1):
        if row.evaluation is None:
            writer.writerow([rank, row.case_id, "", *[""] * len(keys), "", row.problem])
            continue
        metrics = row.evaluation.metrics
        writer.writerow(
            [
                rank,
                row.case_id,
                mean_dice(metrics, regions),
                *(metrics[k] for k in keys),
                "x".join(f"{s:g}" for s in row.evaluation.spacing_mm),
                "",
            ]
        )
    return buffer.getvalue()


def site_page(rows: list[CaseRow], regions: Mapping[str, tuple[int, ...]], header: dict[str, str]) -> dict:
    """What the site report shows, as plain data: the header, the regions, each case (worst first; a case that
    failed has no metrics, only its problem) with its overlay as a data URI, and the metric settings."""
    cases = []
    for rank, row in enumerate(rows, start=1):
        case = {"rank": rank, "case_id": row.case_id, "problem": row.problem, "metrics": None}
        if row.evaluation is not None:
            case |= {
                "metrics": row.evaluation.metrics,
                "mean_dice": mean_dice(row.evaluation.metrics, regions),
                "spacing_mm": list(row.evaluation.spacing_mm),
                "overlay": f"data:image/png;base64,{base64.b64encode(row.overlay).decode('ascii')}",
            }
        cases.append(case)
    return {
        "header": header,
        "regions": list(regions),
        "digits": DIGITS,
        "cases": cases,
        "settings": metric_settings(),
    }


def render_site_report(
    rows: list[CaseRow], regions: Mapping[str, tuple[int, ...]], header: dict[str, str]
) -> str:
    """Self-contained HTML: the per-case table, then each case's overlay, worst first."""
    return render_site_page(site_page(rows, regions, header))
