"""`oncofed simulate`: bad input is one clear line; a tiny federation runs end to end and leaves nothing behind."""

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from data_prep.synth.federation import write_federation
from deploy.processes import processes_with_env
from models.shared.exit_codes import ExitCode
from oncofed_cli import app

runner = CliRunner()


def one_error_line(result, code: ExitCode) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert len(lines) == 1, result.output
    return lines[0]


def test_missing_data_folder(tmp_path):
    result = runner.invoke(
        app, ["simulate", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]
    )
    line = one_error_line(result, ExitCode.BAD_INPUT)
    assert "nowhere" in line and "does not exist" in line


def test_empty_site(tmp_path):
    (tmp_path / "fed" / "hospital-a").mkdir(parents=True)
    result = runner.invoke(app, ["simulate", "--data", str(tmp_path / "fed"), "--out", str(tmp_path / "run")])
    line = one_error_line(result, ExitCode.NO_USABLE_DATA)
    assert "hospital-a" in line and "no cases" in line


def test_unknown_preset(tmp_path):
    result = runner.invoke(
        app, ["simulate", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--preset", "huge"]
    )
    line = one_error_line(result, ExitCode.BAD_INPUT)
    assert "huge" in line and "tiny" in line


@pytest.fixture(scope="module")
def tiny_federation(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("federation")
    write_federation(root, n_sites=2, seed=3, preset="tiny")
    return root


def test_two_round_tiny_federation(tiny_federation, tmp_path):
    run_dir = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "simulate",
            "--data",
            str(tiny_federation),
            "--out",
            str(run_dir),
            "--rounds",
            "2",
            "--preset",
            "tiny",
            "--seed",
            "1",
        ],
    )
    assert result.exit_code == ExitCode.OK, result.output

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    sites = sorted(p.name for p in tiny_federation.iterdir())
    assert sorted((r["round"], r["site"]) for r in records) == [(rnd, s) for rnd in (0, 1, 2) for s in sites]
    assert all(
        math.isfinite(r["metrics"]["dice-mean"]) and 0 <= r["metrics"]["dice-mean"] <= 1 for r in records
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["sites"]) == set(sites)
    assert (run_dir / "models" / "final.pt").is_file() and (run_dir / "models" / "best.pt").is_file()
    assert all((run_dir / name).is_file() for name in ("report.html", "report.json", "metrics.csv"))
    card = (run_dir / "model_card.md").read_text()
    assert all(f"| {site} |" in card for site in sites) and "This was a simulation" in card
    assert 'href="model_card.md"' in (run_dir / "report.html").read_text()
    assert json.loads((run_dir / "app.json").read_text())["fab_sha256"] in card
    for site in sites:
        assert site in result.output  # the per-site table
    assert processes_with_env("FLWR_HOME", str((run_dir / "flwr-home").resolve())) == []


def test_two_runs_with_one_seed_give_the_same_numbers(tiny_federation, tmp_path):
    """Each simulated site's secret, and so its validation split and bootstrap resamples, derives from the run's
    seed and the site's name: two runs into different folders report the same numbers, round 0 included."""
    runs = []
    for name in ("first", "second"):
        args = ["--data", str(tiny_federation), "--out", str(tmp_path / name), "--rounds", "1"]
        args += ["--preset", "tiny", "--seed", "2", "--run-config", "sim-min-train-cases=1 local-epochs=1"]
        result = runner.invoke(app, ["simulate", *args])
        assert result.exit_code == ExitCode.OK, result.output
        records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        runs.append({(r["round"], r["site"]): (r["metrics"], r["train"], r["n_cases"]) for r in records})
    assert sorted(runs[0]) == [(rnd, s) for rnd in (0, 1) for s in ("hospital-a", "hospital-b")]
    assert runs[0] == runs[1]


def test_a_failing_serverapp_is_one_error_line_and_its_traceback_stays_in_the_log(tiny_federation, tmp_path):
    """A resumed simulation whose checkpoint cannot be read: Flower's ServerApp raises and prints a traceback
    into the run's log; the operator sees the exception named in the `error:` line and no traceback."""
    run_dir = tmp_path / "broken"
    (run_dir / "state").mkdir(parents=True)
    sites = sorted(p.name for p in tiny_federation.iterdir())
    run_config = {
        "sim-data": str(tiny_federation),
        "expected-sites": ",".join(sites),
        "num-server-rounds": 1,
        "model-preset": "tiny",
        "run-dir": str(run_dir),
    }
    (run_dir / "config.json").write_text(json.dumps({"run_config": run_config}))
    (run_dir / "summary.json").write_text(json.dumps({"status": "running"}))
    (run_dir / "state" / "checkpoint.pt").write_bytes(b"not a checkpoint")

    result = runner.invoke(app, ["simulate", "--resume", str(run_dir)])
    assert result.exit_code == ExitCode.FAILED, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the ServerApp raised CheckpointError:" in errors[0], result.output
    assert str(run_dir / "logs") in errors[0]
    for shown in ("Traceback", "raised an exception", "Exit Code", 'File "'):
        assert shown not in result.output, result.output
    log = (run_dir / "logs" / "flwr-run.log").read_text()
    assert "raised an exception" in log and "Traceback (most recent call last):" in log
    assert processes_with_env("FLWR_HOME", str((run_dir / "flwr-home").resolve())) == []
