"""The model card: written beside report.html (which links it) whenever the report is written, naming every site,
describing the training data by aggregates only, with per-site validation and CIs, the settings, limitations,
software and the hashes of the model and the app that trained it."""

import json
import re

import pytest
from run_folder_builder import FAB_HASH, REPORTING_SITE, SUPPRESSED_SITE, fake_run

from models.model_hash import weights_sha256
from models.weights import load_checkpoint
from server_app.report.model_card import MODEL_CARD_FILE
from server_app.report.writer import write_report


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    run_dir = fake_run(tmp_path_factory.mktemp("run") / "run-1")
    write_report(run_dir)
    return run_dir, (run_dir / MODEL_CARD_FILE).read_text()


def section(text: str, title: str) -> str:
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_report_links_the_card_written_beside_it(card):
    run_dir, _ = card
    assert f'href="{MODEL_CARD_FILE}"' in (run_dir / "report.html").read_text()


def test_the_card_names_every_site_with_its_aggregates_and_validation(card):
    run_dir, text = card
    data = section(text, "Training data")
    assert f"| {REPORTING_SITE} | 26 | 1 | 20 | 6 |\n" in data
    assert f"| {SUPPRESSED_SITE} | 13 | 0 | 10 | — |\n" in data
    assert "voxel edge" not in data and "size (voxels)" not in data  # single-case ranges are never released
    metrics = json.loads((run_dir / "report.json").read_text())["sites"][0]["metrics"]
    validation = section(text, "Validation per site")
    expected = (
        f"| {REPORTING_SITE} | 1 | 6 | {metrics['dice-mean']:.3f} [{metrics['dice-mean-ci-low']:.3f},"
        f" {metrics['dice-mean-ci-high']:.3f}] | {metrics['dice-wt-mean']:.3f} [{metrics['dice-wt-ci-low']:.3f},"
    )
    assert expected in validation
    assert f"| {SUPPRESSED_SITE} | 1 | — | suppressed (n < 5) |" in validation


def test_the_card_says_what_the_model_is_for_and_not_for(card):
    _, text = card
    assert "Research use only" in text.split("\n## ", 1)[0]
    assert "Diagnosis" in section(text, "Not intended use")
    limitations = section(text, "Limitations")
    for topic in ("Synthetic data", "Small sites", "Metric conventions", "Few validation cases"):
        assert topic in limitations
    strategy = section(text, "Strategy and settings")
    assert "FedAvg" in strategy and "| `model-preset` | tiny |" in strategy


def test_the_card_holds_the_model_and_app_hashes_and_versions(card):
    run_dir, text = card
    state, _ = load_checkpoint(run_dir / "models" / "final.pt")
    assert f"| `models/final.pt` | 0 | `{weights_sha256(state)}` |" in section(text, "Model")
    software = section(text, "Software and hashes")
    assert f"sha256:{FAB_HASH}" in software
    assert re.search(r"Coordinator: .*flwr \d", software) and re.search(
        rf"{REPORTING_SITE}: oncofed \d", software
    )
