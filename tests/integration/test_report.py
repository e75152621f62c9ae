"""The federation report: written at the end of a real run and on demand, self-contained, rendered by headless
Chromium to a screenshot that shows every site, and honest about suppressed sites."""

import csv
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from tiny_capture_run import MIN_REPORT_CASES, REPORTING, SITES, SUPPRESSED, captured_run
from typer.testing import CliRunner

from models.shared.exit_codes import ExitCode
from oncofed_cli import app
from server_app.report.content import report_data
from server_app.report.html_page import render_report
from server_app.run_record.run_folder import RunFolder

runner = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TESSERACT = shutil.which("tesseract")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return captured_run(tmp_path_factory)


def test_the_run_wrote_its_report(run):
    html = (run.run_dir / "report.html").read_text()
    data = json.loads((run.run_dir / "report.json").read_text())
    assert {s["name"]: s["status"] for s in data["sites"]} == {
        REPORTING: "reported",
        SUPPRESSED: "suppressed",
    }
    for site in SITES:
        assert site in html
    assert f"suppressed (n &lt; {MIN_REPORT_CASES})" in html
    for section in (
        "summary",
        "sites",
        "rounds",
        "distributions",
        "baseline",
        "data",
        "methods",
        "limitations",
    ):
        assert f'id="{section}"' in html


def test_the_report_marks_what_the_sites_policy_withheld(run):
    """Means with CIs for the reporting site; medians and quartiles marked withheld (n < 10); the suppressed
    site's and the declined training's reasons; the policy and the BraTS-style penalty in the methods."""
    html = (run.run_dir / "report.html").read_text()
    data = json.loads((run.run_dir / "report.json").read_text())
    shown = next(s for s in data["sites"] if s["name"] == REPORTING)
    assert shown["withheld"] == ["median (n < 10)", "q1 (n < 10)", "q3 (n < 10)"]
    assert "withheld: median (n &lt; 10), q1 (n &lt; 10), q3 (n &lt; 10)" in html
    assert html.count("median, IQR withheld") >= 3 * 7  # every region and metric cell of the reporting site
    overview = next(row for row in data["data_overview"] if row["site"] == SUPPRESSED)
    assert overview["training_note"] == "declined (n < 5)" and "declined (n &lt; 5)" in html
    assert "Disclosure control at the sites" in html and "BraTS-style penalty" in html
    assert "373 or 374 mm" in html and "seed 1" not in html


def test_the_html_is_self_contained(run):
    html = (run.run_dir / "report.html").read_text()
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html and "<link" not in html and "url(" not in html
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) >= 4 and all(s.startswith("data:image/png;base64,") for s in sources)


def test_report_numbers_are_the_sites_aggregates(run):
    records = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    last = max((r for r in records if r["site"] == REPORTING), key=lambda r: r["round"])
    data = json.loads((run.run_dir / "report.json").read_text())
    shown = next(s for s in data["sites"] if s["name"] == REPORTING)
    assert shown["metrics"] == last["metrics"] and shown["n_cases"] == last["n_cases"] == 5
    html = (run.run_dir / "report.html").read_text()
    assert f"{last['metrics']['dice-wt-mean']:.3f} <small>[{last['metrics']['dice-wt-ci-low']:.3f}, " in html
    rows = list(csv.DictReader(io.StringIO((run.run_dir / "metrics.csv").read_text())))
    by_key = {(r["round"], r["site"], r["key"]): r["value"] for r in rows if r["scope"] == "site"}
    assert (
        float(by_key[(str(last["round"]), REPORTING, "hd95-et-ci-high")])
        == last["metrics"]["hd95-et-ci-high"]
    )
    assert {r["key"] for r in rows if r["site"] == SUPPRESSED and r["scope"] == "site"} == {
        "status",
        "min-report-cases",
        "reason",
    }
    pooled = next(p for p in data["pooled"] if p["round"] == last["round"])
    assert pooled["dice-mean"] == pytest.approx(last["metrics"]["dice-mean"])  # one reporting site


@pytest.mark.skipif(
    not (CHROMIUM and TESSERACT),
    reason="needs Debian's `chromium` and `tesseract-ocr` (apt-get install -y chromium tesseract-ocr)",
)
def test_the_report_renders_in_headless_chromium_showing_every_site(run, tmp_path):
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--disable-background-networking",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,1000",
            "--force-device-scale-factor=1.5",
            f"--screenshot={shot}",
            (run.run_dir / "report.html").as_uri(),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.std() > 20 and (pixels < 200).mean() > 0.02  # not blank: text, tables and a chart
    text = subprocess.run(
        [TESSERACT, str(shot), "-", "--psm", "3"], check=True, timeout=120, capture_output=True, text=True
    ).stdout
    seen = re.sub(r"\s+", "", text.lower())
    for site in SITES:
        assert site in seen, text


def test_report_command_rebuilds_the_report_elsewhere(run, tmp_path):
    out = tmp_path / "copy" / "federation.html"
    result = runner.invoke(app, ["report", str(run.run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and (out.parent / "report.json").is_file() and (out.parent / "metrics.csv").is_file()
    assert (
        json.loads((out.parent / "report.json").read_text())["sites"]
        == json.loads((run.run_dir / "report.json").read_text())["sites"]
    )


def test_report_command_on_a_folder_without_a_run_is_one_error_line(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == ExitCode.NO_USABLE_DATA
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "no validation results" in lines[0], result.output


def record(site: str, server_round: int, status: str, metrics: dict) -> dict:
    return {
        "round": server_round,
        "site": site,
        "status": status,
        "min_report_cases": 5,
        "n_cases": metrics.get("n-cases"),
        "metrics": metrics,
        "train": None,
        "conventions": {"regions": ["wt"], "region-labels": ["1+2+3"], "metrics": ["dice"]},
    }


def test_a_run_that_stopped_with_every_site_suppressed_still_has_an_honest_report(tmp_path, flower_task):
    run = RunFolder.create(tmp_path / "run", {"model-preset": "tiny", "num-server-rounds": 3})
    aggregates = {
        "dice-mean": 0.4,
        "dice-mean-ci-low": 0.3,
        "dice-mean-ci-high": 0.5,
        "n-cases": 6,
        **{f"dice-wt-{s}": 0.4 for s in ("mean", "median", "q1", "q3", "ci-low", "ci-high")},
        "empty-both-wt": 0,
        "empty-pred-wt": 1,
        "empty-truth-wt": 0,
        "lesions-tp-wt": 5,
        "lesions-fn-wt": 1,
        "lesions-fp-wt": 2,
    }
    run.append_metrics(record("site-x", 0, "reported", aggregates))
    run.append_metrics(record("site-y", 0, "suppressed", {}))
    run.append_metrics(record("site-x", 1, "suppressed", {}))  # the site lost cases: suppressed from round 1
    run.append_metrics(record("site-y", 1, "suppressed", {}))
    data = report_data(run.path)
    html = render_report(data)
    assert [s["status"] for s in data["sites"]] == ["suppressed", "suppressed"]
    assert "did not finish" in " ".join(data["limitations"])
    assert "0.400" in html  # round 0 of site-x, in the rounds table
    assert html.count("suppressed (n &lt; 5)") >= 4
