"""`oncofed site report`: per-case table and overlays, worst case first, written only into the site's work
folder, with the same per-case metrics the site computed during the run."""

import base64
import csv
import io
import json
import re

import numpy as np
import pytest
from PIL import Image
from tiny_capture_run import REPORTING, SUPPRESSED, captured_run
from typer.testing import CliRunner

from models.shared.exit_codes import ExitCode
from oncofed_cli import app

runner = CliRunner()
SITE_REPORT = ["site", "report"]


def snapshot(root) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return captured_run(tmp_path_factory)


@pytest.fixture(scope="module")
def reported(run):
    """The report of the site that sent aggregates, with the last global model it validated; what changed where."""
    work = run.work(REPORTING)
    root = run.run_dir.parent
    before = snapshot(root)
    result = runner.invoke(app, [*SITE_REPORT, "--work", str(work)])
    after = snapshot(root)
    return work, result, before, after


def test_the_report_is_written_only_into_the_work_folder(reported, run):
    work, result, before, after = reported
    assert result.exit_code == 0, result.output
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    prefix = f"{work.relative_to(run.run_dir.parent)}/"
    assert changed and all(path.startswith(prefix) for path in changed), sorted(changed)
    assert {path.removeprefix(prefix) for path in changed} >= {
        "reports/site-report.html",
        "reports/per-case.csv",
    }


def test_cases_are_listed_worst_first_with_their_overlays(reported, run):
    work = reported[0]
    rows = list(csv.DictReader(io.StringIO((work / "reports" / "per-case.csv").read_text())))
    assert len(rows) == 5
    dice = [float(row["mean_dice"]) for row in rows]
    assert dice == sorted(dice)
    html = (work / "reports" / "site-report.html").read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html
    order = [html.index(f"<h3>{rank}. {row['case_id']}</h3>") for rank, row in enumerate(rows, start=1)]
    assert order == sorted(order)  # overlays in the same, worst-first order
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 5
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(images[0]))).convert("RGB"), dtype=np.int16)
    colour = (np.abs(overlay[..., 0] - overlay[..., 1]) > 60).mean()  # contours on a grey image
    assert overlay.std() > 20 and colour > 0.001


def test_the_metrics_are_those_the_site_computed_in_the_run(reported, run):
    """The run's last global model, validated again here, gives the per-case values the site kept."""
    work = reported[0]
    kept = [json.loads(line) for line in (work / "validation" / "per-case.jsonl").read_text().splitlines()]
    last_round = max(record["round"] for record in kept)
    expected = {r["case_id"]: r["metrics"] for r in kept if r["round"] == last_round}
    rows = list(csv.DictReader(io.StringIO((work / "reports" / "per-case.csv").read_text())))
    assert {row["case_id"] for row in rows} == set(expected)
    for row in rows:
        for key in ("dice-wt", "hd95-tc", "nsd-et", "lesions-fp-wt"):
            assert float(row[key]) == pytest.approx(expected[row["case_id"]][key], rel=1e-6), key


def test_a_given_model_file_is_used(run):
    """Another checkpoint (the round's final global model, from the run folder) at the suppressed site."""
    result = runner.invoke(
        app,
        [
            *SITE_REPORT,
            "--work",
            str(run.work(SUPPRESSED)),
            "--model",
            str(run.run_dir / "models" / "final.pt"),
        ],
    )
    assert result.exit_code == 0, result.output
    html = (run.work(SUPPRESSED) / "reports" / "site-report.html").read_text()
    assert "final.pt" in html and html.count("data:image/png;base64,") == 1  # its own split: 1 of its 5 cases


def test_a_work_folder_that_never_validated_is_one_error_line(tmp_path):
    result = runner.invoke(app, [*SITE_REPORT, "--work", str(tmp_path)])
    assert result.exit_code == ExitCode.NO_USABLE_DATA
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "has not validated a model yet" in lines[0], result.output
