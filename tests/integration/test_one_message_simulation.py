"""One message per site per round gives the numbers two messages give: same data, seed and site secrets, the same
metrics.jsonl validation numbers for every site and round, the same training numbers and the same best round."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from data_prep.synth.federation import write_federation
from models.shared.exit_codes import ExitCode
from oncofed_cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_federation(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("federation")
    write_federation(root, n_sites=2, seed=5, preset="tiny")
    return root


def simulate(federation: Path, run_dir: Path, messages: str) -> tuple[dict, dict]:
    """metrics.jsonl by (round, site), and summary.json, of a 2-round tiny simulation with `round-messages`."""
    args = [
        "--data",
        str(federation),
        "--out",
        str(run_dir),
        "--rounds",
        "2",
        "--preset",
        "tiny",
        "--seed",
        "4",
    ]
    settings = f'round-messages="{messages}" sim-min-train-cases=1 local-epochs=1'
    result = runner.invoke(app, ["simulate", *args, "--run-config", settings])
    assert result.exit_code == ExitCode.OK, result.output
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {(r["round"], r["site"]): r for r in records}, json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow  # two real simulations; the fast tier's check is the scripted loop in tests/unit/test_one_message_rounds.py
def test_one_message_per_round_reports_the_numbers_of_two(tiny_federation, tmp_path):
    one, one_summary = simulate(tiny_federation, tmp_path / "one", "one")
    two, two_summary = simulate(tiny_federation, tmp_path / "two", "two")

    assert sorted(one) == sorted(two) == [(rnd, s) for rnd in (0, 1, 2) for s in ("hospital-a", "hospital-b")]
    for key, record in two.items():
        fields = (
            "status",
            "metrics",
            "n_cases",
            "withheld",
            "min_report_cases",
            "conventions",
            "participation",
        )
        assert {f: one[key][f] for f in fields} == {f: record[f] for f in fields}, key
        assert one[key]["train"] == record["train"], key  # the same training, from the same global model
    assert all(record["metrics"]["dice-mean"] >= 0 for record in one.values())
    assert one_summary["best"] == two_summary["best"] and one_summary["best"]["round"] is not None
    assert one_summary["weighted_mean"] == two_summary["weighted_mean"]
