"""Each training option of a real tiny simulation does what it claims (issue 13).

Runs (tiny_capture_run: the same 2-site federation and settings, every site reply captured; one session each):
- base:    fedavg, 1 round (the shared captured run)
- rerun:   the same again                                  → same metrics and weights
- fedprox: strategy fedprox, proximal-mu 0                 → the weights of fedavg, bit for bit
- options: local-norm, local-baseline, float16, 2 rounds   → norm layers and the local-only model stay home
- dp:      central DP, local-norm, float32, 2 rounds       → ε per round is the accountant's; float16 halves bytes
"""

import json
import re
import shutil
import subprocess
from html import escape as html_escape

import numpy as np
import pytest
import torch
from flwr.serverapp import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    RdpAccountant,
    SamplingMethod,
)
from tiny_capture_run import REPORTING, SITES, SUPPRESSED, captured_run, option_run

from models.baseline_keys import GAIN_PREFIX, LOCAL_PREFIX, baseline_key
from models.norm_layers import norm_state_names
from models.presets import build_model
from models.weights import load_checkpoint
from site_app.local_baseline import MODEL_FILE
from site_app.local_norm import NORM_FILE
from site_app.run_state import RUNS_FOLDER

OPTIONS = {"local-norm": True, "local-baseline": True, "transport-dtype": "float16"}
DP = {"dp-noise-multiplier": 0.2, "dp-clipping-norm": 0.05, "dp-delta": 1e-5, "local-norm": True}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TESSERACT = shutil.which("tesseract")


def records(run) -> list[dict]:
    lines = (run.run_dir / "metrics.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: (r["round"], r["site"]))


def final_weights(run) -> dict[str, torch.Tensor]:
    return load_checkpoint(run.run_dir / "models" / "final.pt")[0]


def train_replies(run, site: str):
    return [m for name, m in run.messages(site) if "-train-" in name and not m.has_error()]


def evaluate_replies(run, site: str):
    return [m for name, m in run.messages(site) if "-evaluate-" in name and not m.has_error()]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return captured_run(tmp_path_factory)


@pytest.fixture(scope="module")
def options(tmp_path_factory):
    return option_run(tmp_path_factory, "options", OPTIONS, rounds=2)


@pytest.fixture(scope="module")
def dp(tmp_path_factory):
    return option_run(tmp_path_factory, "dp", DP, rounds=2)


def test_the_same_command_and_seed_give_the_same_metrics_and_weights(tmp_path_factory, base):
    again = option_run(tmp_path_factory, "rerun", {})
    first, second = records(base), records(again)
    assert [r["metrics"] for r in first] == [r["metrics"] for r in second]
    assert [r["train"] for r in first] == [r["train"] for r in second]
    assert any(r["train"] for r in first)  # round 1 trained: training itself repeated
    a, b = final_weights(base), final_weights(again)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fedprox_with_mu_zero_gives_the_weights_of_fedavg_bit_for_bit(tmp_path_factory, base):
    prox = option_run(tmp_path_factory, "fedprox", {"strategy": "fedprox", "proximal-mu": 0.0})
    config = json.loads((prox.run_dir / "config.json").read_text())["run_config"]
    assert config["strategy"] == "fedprox" and config["proximal-mu"] == 0.0
    a, b = final_weights(base), final_weights(prox)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "FedProx" in (prox.run_dir / "report.html").read_text()


def test_with_local_norm_no_normalization_parameter_leaves_a_site(options):
    norm = norm_state_names(build_model("tiny"))
    for site in SITES:
        replies = train_replies(options, site)
        assert len(replies) == 2
        for reply in replies:
            arrays = reply.content["arrays"]
            assert arrays.keys() and not norm & set(arrays.keys())
            assert {array.dtype for array in arrays.values()} == {"float16"}  # float16 transport
        for reply in evaluate_replies(options, site):
            assert not reply.content.array_records
        kept = next((options.work(site) / RUNS_FOLDER).glob(f"*/{NORM_FILE}"))
        state = torch.load(kept, weights_only=True)["state_dict"]
        assert set(state) == norm and any(not torch.equal(v, torch.ones_like(v)) for v in state.values())


def test_the_local_only_model_never_leaves_its_site(options):
    for site in SITES:
        path = next((options.work(site) / RUNS_FOLDER).glob(f"*/{MODEL_FILE}"))
        local = torch.load(path, weights_only=True)
        assert local["meta"] == {"first_round": 1, "round": 2}
        for reply in train_replies(options, site):
            sent = reply.content["arrays"]
            differences = [
                float(
                    np.abs(
                        sent[k].numpy().astype(np.float32) - local["state_dict"][k].half().float().numpy()
                    ).max()
                )
                for k in sent
            ]
            assert max(differences) > 1e-3
        assert all(not r.content.array_records for r in evaluate_replies(options, site))
    # Only aggregates of it leave, and only from a site that reports
    last = {r["site"]: r for r in records(options) if r["round"] == 2}
    assert baseline_key(GAIN_PREFIX, "dice", None, "ci-low") in last[REPORTING]["metrics"]
    assert last[SUPPRESSED]["status"] == "suppressed" and last[SUPPRESSED]["metrics"] == {}


def test_the_report_compares_every_reporting_site_with_its_local_only_model(options, tmp_path):
    data = json.loads((options.run_dir / "report.json").read_text())
    baseline = {s["name"]: s for s in data["training"]["baseline"]["sites"]}
    reporting = baseline[REPORTING]
    assert [p["round"] for p in reporting["rounds"]] == [0, 1, 2]
    last = next(r for r in records(options) if r["round"] == 2 and r["site"] == REPORTING)
    assert (
        reporting["rounds"][-1]["local"] == last["metrics"][baseline_key(LOCAL_PREFIX, "dice", None, "mean")]
    )
    assert reporting["verdict"] and REPORTING in reporting["verdict"]
    assert baseline[SUPPRESSED]["verdict"] is None
    html = (options.run_dir / "report.html").read_text()
    section = html[html.index('id="baseline"') : html.index('id="data"')]
    assert html_escape(reporting["verdict"]) in section
    assert f"{last['metrics'][baseline_key(LOCAL_PREFIX, 'dice', None, 'mean')]:.3f}" in section
    assert "float16" in html and "personalized model" in html
    if CHROMIUM and TESSERACT:
        shot = tmp_path / "report.png"
        subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--window-size=1200,9000",
                f"--screenshot={shot}",
                (options.run_dir / "report.html").as_uri(),
            ],
            check=True,
            timeout=120,
            capture_output=True,
        )
        text = subprocess.run(
            [TESSERACT, str(shot), "-", "--psm", "3"], check=True, timeout=120, capture_output=True, text=True
        ).stdout
        seen = re.sub(r"\s+", " ", text.lower())
        assert "local-only" in seen and REPORTING in seen.replace(" ", "")


def test_epsilon_grows_with_the_rounds_and_is_the_accountants(dp):
    by_round = {}
    for record in records(dp):
        if record["round"]:
            by_round.setdefault(record["round"], set()).add(record["privacy"]["epsilon"])
    assert set(by_round) == {1, 2} and all(len(v) == 1 for v in by_round.values())
    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=DP["dp-delta"],
            population_size=len(SITES),
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )
    expected = []
    for _ in by_round:
        accountant.compose(GaussianPrivacyEvent(DP["dp-noise-multiplier"], len(SITES), len(SITES)))
        expected.append(accountant.get_privacy_spent().epsilon)
    shown = [by_round[r].pop() for r in sorted(by_round)]
    assert shown == pytest.approx(expected, rel=1e-12) and shown[0] < shown[1]
    html = (dp.run_dir / "report.html").read_text()
    assert f"ε = {shown[-1]:.2f} at δ = {DP['dp-delta']:g}" in html


def test_float16_transport_halves_the_bytes_measured_on_the_messages(options, dp):
    """Both runs keep the norm layers at the sites, so their messages carry the same arrays."""

    def weight_bytes(run) -> int:
        return sum(r["bytes"][k] for r in records(run) for k in ("train-down", "train-up", "evaluate-down"))

    ratio = weight_bytes(options) / weight_bytes(dp)
    assert 0.45 < ratio < 0.55, ratio
