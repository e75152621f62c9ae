"""Each training option of a real tiny simulation does what it claims.

Runs (tiny_capture_run: the same 2-site federation and settings, every site reply captured; one session each).
Under the sites' default disclosure policy hospital-a trains and reports; hospital-b has too few cases, so it
declines to train (no weights) and suppresses its validation in every run; the runs that must change the global
model set the quorum to that one training site (QUORUM: min-sites 1; the coordinator's default is a majority).

Default tier, one run of one round:
- combined: local-norm, local-baseline, personalize-epochs, float16 transport, central DP, post-processing → norm
            layers, the local-only and the personalized model stay home, the report compares each reporting site with its local-only model, ε is
            the accountant's
Slow tier (`make test-slow`), three more runs:
- base + rerun: fedavg twice                                 → same metrics and weights
- fedprox:      strategy fedprox, proximal-mu 0              → the weights of fedavg, bit for bit
- float32:      the combined settings in float32, 2 rounds   → float16 halves the bytes; ε grows per round
Every option also has unit tests (tests/unit/test_strategies.py, test_local_norm_and_baseline.py,
test_local_training.py).
"""

import json
import re
import shutil
import subprocess
from html import escape as html_escape

import numpy as np
import pytest
import torch
from flwr.common.serde import message_from_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
from flwr.serverapp import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    RdpAccountant,
    SamplingMethod,
)
from tiny_capture_run import REPORTING, SITES, SUPPRESSED, captured_run, option_run

from models.norm_layers import norm_state_names
from models.presets import build_model
from models.shared.wire import (
    GAIN_PREFIX,
    LOCAL_ONLY_PREFIX,
    NUM_EXAMPLES,
    PERSONALIZATION_GAIN_PREFIX,
    PERSONALIZED_PREFIX,
    Packing,
    Record,
    Status,
    baseline_key,
)
from models.weights import load_checkpoint
from site_app.learning.local_baseline import MODEL_FILE
from site_app.learning.local_norm import NORM_FILE
from site_app.learning.personalize import MODEL_FILE as PERSONALIZED_FILE
from site_app.learning.run_state import RUNS_FOLDER

QUORUM = {"min-sites": 1}
"""hospital-a alone: its sound training reply is enough to change the global model."""
COMBINED = {
    **QUORUM,
    "local-norm": True,
    "local-baseline": True,
    "transport-dtype": "float16",
    "dp-noise-multiplier": 0.2,
    "dp-clipping-norm": 0.05,
    "dp-delta": 1e-5,
    "sim-min-lesion-mm3": 8.0,
    "personalize-epochs": 1,
}
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
def combined(tmp_path_factory):
    return option_run(tmp_path_factory, "combined", COMBINED)


@pytest.fixture(scope="module")
def float32(tmp_path_factory):
    return option_run(tmp_path_factory, "float32", {**COMBINED, "transport-dtype": "float32"}, rounds=2)


@pytest.mark.slow
def test_the_same_command_and_seed_give_the_same_metrics_and_weights(tmp_path_factory, base):
    again = option_run(tmp_path_factory, "rerun", {})
    first, second = records(base), records(again)
    assert [r["metrics"] for r in first] == [r["metrics"] for r in second]
    assert [r["train"] for r in first] == [r["train"] for r in second]
    assert any(r["train"] for r in first)  # round 1 trained: training itself repeated
    a, b = final_weights(base), final_weights(again)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_fedprox_with_mu_zero_gives_the_weights_of_fedavg_bit_for_bit(tmp_path_factory):
    fedavg = option_run(tmp_path_factory, "fedavg", QUORUM)
    prox = option_run(tmp_path_factory, "fedprox", {**QUORUM, "strategy": "fedprox", "proximal-mu": 0.0})
    config = json.loads((prox.run_dir / "config.json").read_text())["run_config"]
    assert config["strategy"] == "fedprox" and config["proximal-mu"] == 0.0
    a, b = final_weights(fedavg), final_weights(prox)
    initial = build_model("tiny", seed=1).state_dict()
    assert any(not torch.equal(a[k], initial[k]) for k in a)  # the global model did change
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "FedProx" in (prox.run_dir / "report.html").read_text()


def test_with_local_norm_no_normalization_parameter_leaves_a_site(combined):
    norm = norm_state_names(build_model("tiny"))
    replies = train_replies(combined, REPORTING)
    assert len(replies) == 1
    for reply in replies:
        arrays = reply.content[Record.ARRAYS]
        assert arrays.keys() and not norm & set(arrays.keys())
        assert {array.dtype for array in arrays.values()} == {"float16"}  # float16 transport
    assert all(not r.content.array_records for r in train_replies(combined, SUPPRESSED))  # declined
    for site in SITES:
        assert all(not r.content.array_records for r in evaluate_replies(combined, site))
    kept = next((combined.work(REPORTING) / RUNS_FOLDER).glob(f"*/{NORM_FILE}"))
    state = torch.load(kept, weights_only=True)["state_dict"]
    assert set(state) == norm and any(not torch.equal(v, torch.ones_like(v)) for v in state.values())
    # What the site validated, with its own norm layers, is what `site predict` may use; the run's is refused
    latest = torch.load(combined.work(REPORTING) / "models" / "global-latest.pt", weights_only=True)
    assert latest["meta"]["norm_layers"] == "site"
    assert all(torch.equal(latest["state_dict"][k], state[k]) for k in norm)
    assert torch.load(combined.run_dir / "models" / "final.pt", weights_only=True)["meta"]["norm_layers"] == (
        "initial"
    )


def test_the_local_only_model_never_leaves_its_site(combined):
    path = next((combined.work(REPORTING) / RUNS_FOLDER).glob(f"*/{MODEL_FILE}"))
    local = torch.load(path, weights_only=True)
    assert local["meta"] == {"first_round": 1, "round": 1}
    for reply in train_replies(combined, REPORTING):
        sent = reply.content[Record.ARRAYS]
        differences = [
            float(
                np.abs(
                    sent[k].numpy().astype(np.float32) - local["state_dict"][k].half().float().numpy()
                ).max()
            )
            for k in sent
        ]
        assert max(differences) > 1e-3
    assert not list((combined.work(SUPPRESSED) / RUNS_FOLDER).glob(f"*/{MODEL_FILE}"))  # never trained
    for site in SITES:
        assert all(not r.content.array_records for r in evaluate_replies(combined, site))
    # Only aggregates of it leave, and only from a site that reports
    last = {r["site"]: r for r in records(combined) if r["round"] == 1}
    assert baseline_key(GAIN_PREFIX, "dice", None, "ci-low") in last[REPORTING]["metrics"]
    assert last[SUPPRESSED]["status"] == Status.SUPPRESSED and last[SUPPRESSED]["metrics"] == {}


def test_weights_leave_a_site_packed_and_are_read_by_name_after_unpacking(combined):
    """What the capture reads (tests/support/wire_messages.py) is the wire's packed form taken apart: every train
    reply with weights left as one packed array, and unpacked it has the model's names."""
    weighted = []
    for site in SITES:
        raw = [message_from_proto(ProtoMessage.FromString(data)) for _, data in combined.captured[site]]
        weighted += [m for m in raw if not m.has_error() and Record.ARRAYS in m.content.array_records]
    assert weighted  # the reporting site trained
    assert all(list(m.content[Record.ARRAYS].keys()) == [Packing.PACKED_ARRAY] for m in weighted)
    for site in SITES:
        for _, message in combined.messages(site):
            if Record.ARRAYS in message.content.array_records:
                assert Packing.PACKED_ARRAY not in message.content[Record.ARRAYS]


def test_the_personalized_model_never_leaves_its_site(combined):
    path = next((combined.work(REPORTING) / RUNS_FOLDER).glob(f"*/{PERSONALIZED_FILE}"))
    personal = torch.load(path, weights_only=True)["state_dict"]
    for site in SITES:
        for name, reply in combined.messages(site):
            for record in reply.content.array_records.values():
                for key in record:
                    sent = record[key].numpy().astype(np.float32)
                    as_sent = personal[key].half().float().numpy()
                    assert sent.size == 1 or not np.array_equal(sent, as_sent), (site, name, key)
    assert not list(
        (combined.work(SUPPRESSED) / RUNS_FOLDER).glob(f"*/{PERSONALIZED_FILE}")
    )  # never reported
    # Only its aggregates leave, from the site that reports, beside the global model's
    last = {r["site"]: r for r in records(combined) if r["round"] == 1}
    metrics = last[REPORTING]["metrics"]
    assert 0.0 <= metrics[baseline_key(PERSONALIZED_PREFIX, "dice", None, "mean")] <= 1.0
    assert baseline_key(PERSONALIZATION_GAIN_PREFIX, "dice", None, "ci-low") in metrics


def test_the_report_compares_every_reporting_site_with_its_local_only_model(combined):
    data = json.loads((combined.run_dir / "report.json").read_text())
    baseline = {s["name"]: s for s in data["training"]["baseline"]["sites"]}
    reporting = baseline[REPORTING]
    assert [p["round"] for p in reporting["rounds"]] == [0, 1]
    assert reporting["rounds"][0]["gain"] == 0  # round 0: both are the initial model
    last = next(r for r in records(combined) if r["round"] == 1 and r["site"] == REPORTING)
    assert (
        reporting["rounds"][-1]["local"]
        == last["metrics"][baseline_key(LOCAL_ONLY_PREFIX, "dice", None, "mean")]
    )
    assert reporting["verdict"] and REPORTING in reporting["verdict"]
    assert baseline[SUPPRESSED]["verdict"] is None
    html = (combined.run_dir / "report.html").read_text()
    section = html[html.index('id="baseline"') : html.index('id="data"')]
    assert html_escape(reporting["verdict"]) in section
    assert f"{last['metrics'][baseline_key(LOCAL_ONLY_PREFIX, 'dice', None, 'mean')]:.3f}" in section
    assert "float16" in html and "personalized model" in html and "set to background" in html
    card = (combined.run_dir / "model_card.md").read_text()
    assert "refuse them" in card and "| `local-norm` | True |" in card


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and TESSERACT), reason="needs chromium and tesseract")
def test_the_local_only_section_renders_with_numbers_for_every_reporting_site(combined, tmp_path):
    data = json.loads((combined.run_dir / "report.json").read_text())
    reporting = [s for s in data["training"]["baseline"]["sites"] if s["rounds"]]
    assert [s["name"] for s in reporting] == [REPORTING]
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
            (combined.run_dir / "report.html").as_uri(),
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
    assert f"{abs(reporting[0]['rounds'][-1]['gain']):.3f}" in seen.replace(" ", "")  # the verdict's number


def accounted(run) -> tuple[list[float], list[float]]:
    """(ε the run filed per round, ε of Flower's accountant for the releases the run made)."""
    by_round: dict[int, set[float]] = {}
    trained: dict[int, int] = {}
    for record in records(run):
        if record["round"]:
            by_round.setdefault(record["round"], set()).add(record["privacy"]["epsilon"])
            trained[record["round"]] = trained.get(record["round"], 0) + (NUM_EXAMPLES in record["train"])
    assert all(len(v) == 1 for v in by_round.values())  # one ε per round, filed with every site's record
    assert set(trained.values()) == {1}  # hospital-b declines to train: one clipped update of the two sites'
    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=COMBINED["dp-delta"],
            population_size=len(SITES),
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )
    expected = []
    for rnd in sorted(by_round):
        # σ = z·C/n on the mean of m updates (sensitivity C/m): the release's multiplier is z·m/n
        multiplier = COMBINED["dp-noise-multiplier"] * trained[rnd] / len(SITES)
        accountant.compose(GaussianPrivacyEvent(multiplier, trained[rnd], len(SITES)))
        expected.append(accountant.get_privacy_spent().epsilon)
    return [by_round[r].pop() for r in sorted(by_round)], expected


def test_epsilon_is_the_accountants_and_shown_in_the_report(combined):
    shown, expected = accounted(combined)
    assert len(shown) == 1 and shown == pytest.approx(expected, rel=1e-12)
    html = (combined.run_dir / "report.html").read_text()
    assert f"ε = {shown[-1]:.2f} at δ = {COMBINED['dp-delta']:g}" in html


@pytest.mark.slow
def test_epsilon_grows_with_the_rounds(float32):
    shown, expected = accounted(float32)
    assert len(shown) == 2 and shown == pytest.approx(expected, rel=1e-12) and shown[0] < shown[1]


@pytest.mark.slow
def test_float16_transport_halves_the_bytes_measured_on_the_messages(combined, float32):
    """Both runs have the same settings but the transport dtype (norm layers at the sites, central DP)."""

    def weight_bytes(run) -> int:
        return sum(
            r["bytes"][k]
            for r in records(run)
            if r["round"] == 1
            for k in ("train-down", "train-up", "evaluate-down")
        )

    ratio = weight_bytes(combined) / weight_bytes(float32)
    assert 0.45 < ratio < 0.55, ratio
