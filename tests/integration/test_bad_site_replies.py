"""Nothing a site sends can end the run: in a real simulation four of five sites corrupt their training reply
(a wrong-shape array, float64 arrays, renamed records, num-examples far above their cases); each is dropped with
the site and the check named, the honest site's update is used, and the run completes with every site validated.

The same run shows that simulate's clean-up stops only what it started: a bystander process that happens to carry
the run's FLWR_HOME survives it."""

import json
import os
import shutil
import sys
import tomllib
from pathlib import Path

import pytest

from data_prep.synth.federation import write_federation
from deploy.flower_env import toml_value
from deploy.processes import start_process
from deploy.simulation.launch import failure_context, run_simulation
from deploy.simulation.plan import plan_simulation
from server_app.run_record.run_folder import read_metrics, read_rounds

pytestmark = pytest.mark.slow  # a five-site simulation: minutes on two cores

REPO = Path(__file__).resolve().parents[2]
SITES = ["hospital-a", "hospital-b", "hospital-c", "hospital-d", "hospital-e"]


def misbehaving_app(folder: Path, run_config: dict) -> Path:
    """A Flower app folder whose ClientApp is tests/support/misbehaving_clientapp.py; same ServerApp."""
    folder.mkdir()
    shutil.copy(REPO / "tests" / "support" / "misbehaving_clientapp.py", folder / "misbehaving_clientapp.py")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    config = {**project["tool"]["flwr"]["app"]["config"], **run_config}
    lines = [
        "[project]",
        'name = "oncofed-misbehaving"',
        'version = "0.1.0"',
        "dependencies = []",
        "",
        "[tool.flwr.app]",
        'publisher = "oncofed"',
        'fab-include = ["misbehaving_clientapp.py"]',
        "",
        "[tool.flwr.app.components]",
        'serverapp = "server_app.app:app"',
        'clientapp = "misbehaving_clientapp:app"',
        "",
        "[tool.flwr.app.config]",
        *(f"{key} = {toml_value(value)}" for key, value in config.items()),
    ]
    (folder / "pyproject.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str, bool]:
    root = tmp_path_factory.mktemp("bad-replies")
    write_federation(root / "data", n_sites=len(SITES), seed=4, preset="tiny")
    plan = plan_simulation(root / "data", root / "run", rounds=1, preset="tiny", seed=2)
    run_config = {
        **plan.run_config,
        "min-sites": 1,
        "local-epochs": 1,
        "train-timeout-s": 1200.0,
        "sim-min-train-cases": 1,  # tiny sites train on three to five cases: all of them train (and misbehave)
    }
    plan = plan.__class__(
        app_dir=misbehaving_app(root / "app", run_config),
        run_dir=plan.run_dir,
        n_sites=plan.n_sites,
        run_config=run_config,
    )
    bystander = start_process(
        "bystander",
        [sys.executable, "-c", "import time; time.sleep(3600)"],
        {**os.environ, "FLWR_HOME": str(plan.run_dir / "flwr-home")},
        root / "bystander.log",
    )
    try:
        lines: list[str] = []
        code = run_simulation(plan, lines.append)
        spared = bystander.popen.poll() is None
    finally:
        bystander.stop()
    assert code == 0, f"flwr run exit code {code}\n{failure_context(plan.run_dir)}"
    return plan.run_dir, "\n".join(lines), spared


def test_each_bad_reply_is_dropped_with_the_site_and_the_check_named(run):
    run_dir, output, _ = run
    round_1 = {r["site"]: r for r in read_metrics(run_dir) if r["round"] == 1}
    train = {site: r["participation"]["train"] for site, r in round_1.items()}
    assert train["hospital-a"] == "ok"
    assert (
        train["hospital-b"].startswith("dropped: weights ")
        and "have shape (3, 3) instead of" in train["hospital-b"]
    )
    assert (
        train["hospital-c"].startswith("dropped: weights ")
        and "are float64 instead of float32" in train["hospital-c"]
    )
    assert train["hospital-d"] == (
        "dropped: its records are [results (MetricRecord), weights (ArrayRecord)]; expected exactly "
        "[arrays (ArrayRecord), metrics (MetricRecord)]"
    )
    assert train["hospital-e"].startswith("dropped: `num-examples` is 1e+12, more than the 4 usable cases")
    words = " ".join(output.split())  # the streamed log wraps long lines
    for site in SITES[1:]:
        assert f"dropping the train reply of site {site}" in words


def test_the_run_completes_with_the_honest_update_and_every_site_validated(run):
    run_dir, _, _ = run
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert read_rounds(run_dir)[1]["train"] == {
        "asked": SITES,
        "sound": ["hospital-a"],
        "aggregated": True,
        "reason": "",
    }
    assert {r["site"]: r["status"] for r in read_metrics(run_dir) if r["round"] == 1} == dict.fromkeys(
        SITES, "reported"
    )
    assert (run_dir / "models" / "final.pt").is_file() and (run_dir / "report.html").is_file()


def test_clean_up_spares_a_bystander_with_the_same_flwr_home(run):
    _, _, spared = run
    assert spared
