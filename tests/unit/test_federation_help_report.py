"""The report's answer to "did federation help each site?" (first paragraph), the simulate table's global vs
local-only columns, and the cross-site matrix with only the cells the sites allowed; from scripted records."""

import json

from run_folder_builder import REPORTING_SITE, SUPPRESSED_SITE, fake_run

from models.shared.wire import (
    GAIN_PREFIX,
    LOCAL_ONLY_PREFIX,
    PERSONALIZED_OVER_LOCAL_PREFIX,
    PERSONALIZED_PREFIX,
    baseline_key,
)
from server_app.report.content import report_data
from server_app.report.html_page import render_report
from server_app.report.site_table import site_table_text
from server_app.run_record.run_folder import CROSS_SITE_FILE, METRICS_FILE, read_metrics

EAST, WEST = "hospital-east", "hospital-west"


def keys(prefix: str, mean: float, low: float, high: float) -> dict[str, float]:
    return {
        baseline_key(prefix, "dice", None, s): v
        for s, v in (("mean", mean), ("ci-low", low), ("ci-high", high))
    }


def run_with_baselines(tmp_path, matrix: dict | None = None):
    """fake_run's two sites, and two more at round 1: east with a local-only baseline (federation helped), west
    with a personalized model too (no evidence either way); the north site (REPORTING_SITE) sends no baseline."""
    run_dir = fake_run(tmp_path / "run")
    template = next(r for r in read_metrics(run_dir) if r["site"] == REPORTING_SITE and r["round"] == 1)
    east = {**template["metrics"], "dice-mean": 0.78, **keys(LOCAL_ONLY_PREFIX, 0.41, 0.35, 0.47)}
    east |= keys(GAIN_PREFIX, 0.37, 0.30, 0.44)
    west = {**template["metrics"], "dice-mean": 0.70, **keys(LOCAL_ONLY_PREFIX, 0.66, 0.6, 0.72)}
    west |= keys(GAIN_PREFIX, 0.04, 0.01, 0.07) | keys(PERSONALIZED_PREFIX, 0.69, 0.63, 0.75)
    west |= keys(PERSONALIZED_OVER_LOCAL_PREFIX, 0.03, -0.02, 0.08)
    with (run_dir / METRICS_FILE).open("a", encoding="utf-8") as out:
        for site, metrics in ((EAST, east), (WEST, west)):
            out.write(json.dumps({**template, "site": site, "metrics": metrics}) + "\n")
    if matrix is not None:
        (run_dir / CROSS_SITE_FILE).write_text(json.dumps(matrix))
    return run_dir


def test_the_first_paragraph_answers_per_site_with_the_paired_difference_and_its_ci(tmp_path):
    data = report_data(run_with_baselines(tmp_path))
    rows = {row["site"]: row for row in data["federation_help"]}

    assert set(rows) == {EAST, WEST}  # the north site sent no baseline, the south none at all
    assert rows[EAST]["comparison"] == "global − local-only"
    assert rows[EAST]["difference"] == 0.37 and rows[EAST]["ci"] == [0.30, 0.44]
    assert rows[EAST]["answer"].startswith(f"yes at {EAST}")
    assert rows[WEST]["comparison"] == "personalized − local-only"  # personalization ran: its difference
    assert rows[WEST]["difference"] == 0.03 and rows[WEST]["ci"] == [-0.02, 0.08]
    assert rows[WEST]["answer"].startswith(f"no evidence either way at {WEST}")

    html = render_report(data)
    paragraph = html.index('id="federation-help"')
    assert paragraph < html.index('id="summary"')  # the report's first paragraph
    assert "+0.370 Dice [95 % CI +0.300, +0.440]" in html[paragraph : html.index('id="summary"')]


def test_without_a_baseline_the_first_paragraph_says_the_run_cannot_tell(tmp_path):
    html = render_report(report_data(fake_run(tmp_path / "run")))
    start = html.index('id="federation-help"')
    assert "cannot say" in html[start : html.index('id="summary"')]


def test_the_simulate_table_shows_global_vs_local_only_with_the_paired_ci(tmp_path):
    text = site_table_text(read_metrics(run_with_baselines(tmp_path)), width=250)
    east = next(line for line in text.splitlines() if EAST in line)
    north = next(line for line in text.splitlines() if REPORTING_SITE in line)

    assert "Global − local-only [95 % CI]" in text
    assert "0.410" in east and "+0.370 [+0.300, +0.440]" in east
    assert "withheld" in north


def test_the_matrix_has_only_the_allowed_cells_and_the_board_sentence(tmp_path):
    matrix = {
        "round": 1,
        "consenting": [EAST, WEST],
        "not_consenting": [REPORTING_SITE, SUPPRESSED_SITE],
        "models": {EAST: "sent", WEST: "sent"},
        "cells": [
            {"model": EAST, "site": WEST, "status": "reported", "n_cases": 6, "dice-mean": 0.40},
            {"model": WEST, "site": EAST, "status": "reported", "n_cases": 6, "dice-mean": 0.55},
        ],
    }
    data = report_data(run_with_baselines(tmp_path, matrix))["cross_site"]
    rows = {row["model"]: row["cells"] for row in data["rows"]}

    assert set(rows["federated model"]) == {EAST, WEST, REPORTING_SITE, SUPPRESSED_SITE}
    assert {site: cell["value"] for site, cell in rows[f"{EAST}'s own model"].items()} == {
        EAST: 0.41,
        WEST: 0.40,
    }
    assert {site: cell["value"] for site, cell in rows[f"{WEST}'s own model"].items()} == {
        WEST: 0.66,
        EAST: 0.55,
    }
    assert (
        f"{EAST}'s own model scores 0.40 at the other site ({WEST}); the federated model 0.70"
        in data["sentences"]
    )

    html = render_report(report_data(run_with_baselines(tmp_path / "again", matrix)))
    assert 'id="cross-site"' in html and f"{WEST}&#39;s own model scores 0.55" in html


def test_without_a_matrix_file_the_report_has_no_matrix(tmp_path):
    data = report_data(run_with_baselines(tmp_path))
    assert data["cross_site"] is None and 'id="cross-site"' not in render_report(data)
