"""Every absence named: one metrics.jsonl record per site per round, the terminal's participation line, and the
report's site × round grid, for sites that trained, were dropped, timed out or were never online."""

import json
import tomllib
from pathlib import Path

import numpy as np
from flwr.app import Error, Message, RecordDict
from flwr.common.config import flatten_dict
from flwr.common.constant import ErrorCode
from scripted_grid import ScriptedGrid, ScriptedSite, trained

from models.shared.labels import evaluation_regions
from models.shared.run_config import defaults
from models.shared.wire import Status
from server_app.app import run_federation
from server_app.rounds.participation import (
    NOT_ONLINE,
    OK,
    PhaseOutcome,
    RoundLedger,
    SiteRound,
    answer_outcome,
    participation_line,
)
from site_app.disclosure.validation_replies import ValidationPolicy, evaluation_content
from site_app.learning.metrics import case_metrics
from site_app.learning.validation import CaseEvaluation
from site_app.settings.run_settings import SiteRunSettings

REPO = Path(__file__).resolve().parents[2]
DEFAULTS = flatten_dict(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"])


def test_a_site_never_seen_is_filed_offline_in_every_round():
    ledger = RoundLedger(2, {"hospital-a": SiteRound(train=PhaseOutcome("ok"), evaluate=PhaseOutcome("ok"))})
    records = {r["site"]: r for r in ledger.records(["hospital-a", "hospital-c"])}
    assert records["hospital-c"]["status"] == "offline"
    assert records["hospital-c"]["reason"] == f"train: {NOT_ONLINE.reason}"
    assert records["hospital-c"]["metrics"] == {} and records["hospital-c"]["n_cases"] is None


def test_error_replies_become_outcomes(flower_task):
    request = Message(RecordDict(), dst_node_id=7, message_type="train")
    request.metadata.__dict__["_message_id"] = "m1"
    failed = Message(
        Error(code=2, reason="site failed in train (ValueError); details are in the site log"),
        reply_to=request,
    )
    assert answer_outcome(failed, 60) == PhaseOutcome(
        "failed", "site failed in train (ValueError); details are in the site log"
    )
    expired = Message(Error(code=ErrorCode.MESSAGE_UNAVAILABLE, reason="expired"), reply_to=request)
    assert answer_outcome(expired, 60).status == "timeout"
    assert answer_outcome(None, 60) == PhaseOutcome("timeout", "no reply within 60 s")


def test_the_participation_line_names_who_is_missing_and_since_when(flower_task):
    request = Message(RecordDict(), dst_node_id=7, message_type="evaluate")
    evaluation = Message(RecordDict(), reply_to=request)  # a sound evaluate reply arrived (its content aside)
    ledger = RoundLedger(
        3,
        {
            "hospital-a": SiteRound(train=OK, evaluate=OK, evaluation=evaluation),
            "hospital-b": SiteRound(train=OK, evaluate=OK, evaluation=evaluation),
        },
    )
    everyone = ["hospital-a", "hospital-b", "hospital-c"]
    assert participation_line(ledger, everyone, {"hospital-c": "14:02"}) == (
        "round 3: 2 of 3 sites; hospital-c offline since 14:02"
    )
    ledger.sites["hospital-b"].train = PhaseOutcome(Status.TIMEOUT, "no reply within 60 s")
    ledger.sites["hospital-a"] = SiteRound(
        train=OK, evaluate=PhaseOutcome(Status.TIMEOUT, "no reply within 30 s")
    )
    assert participation_line(ledger, everyone, {}) == (
        "round 3: 1 of 3 sites; hospital-a validation timeout: no reply within 30 s; hospital-b timeout (no reply "
        "within 60 s); hospital-c offline (not online when the phase started)"
    )


def test_round_0_counts_the_validations_that_arrived_and_names_a_sites_own_policy(flower_task):
    request = Message(RecordDict(), dst_node_id=7, message_type="evaluate")
    evaluation = Message(RecordDict(), reply_to=request)
    suppressed = PhaseOutcome(Status.SUPPRESSED, "n < 5")
    ledger = RoundLedger(
        0,
        {
            "hospital-a": SiteRound(evaluate=OK, evaluation=evaluation),
            "hospital-b": SiteRound(evaluate=suppressed, evaluation=evaluation),
            "hospital-c": SiteRound(evaluate=PhaseOutcome(Status.DROPPED, "its records are [none]")),
        },
    )
    assert participation_line(ledger, ["hospital-a"], {}) == (
        "round 0: 2 of 3 sites; hospital-b suppressed (n < 5); hospital-c dropped (its records are [none])"
    )


def real_validation(n_cases: int, seed: int) -> RecordDict:
    """The evaluate reply a real site sends (site_app.disclosure.validation_replies) for small synthetic predictions."""
    rng = np.random.default_rng(seed)
    results = []
    for index in range(n_cases):
        truth = np.zeros((12, 12, 12), dtype=np.uint8)
        truth[3:8, 3:8, 3:8] = 2
        truth[4:6, 4:6, 4:6] = 3
        prediction = np.roll(truth, int(rng.integers(0, 3)), axis=index % 3)
        spacing = (1.0, 1.0, 2.0)
        metrics = case_metrics(prediction, truth, spacing, evaluation_regions("brats"))
        results.append(CaseEvaluation(f"case-{index}", spacing, metrics, np.zeros(1), truth, prediction))
    node_config = {"data-path": "/d", "work-path": "/w", "site-name": "x", "min-report-cases": 1}
    settings = SiteRunSettings.from_run_config({**defaults(), "seed": 3})
    return evaluation_content(
        results, 0, ValidationPolicy.for_site(settings, node_config), bootstrap_seed=seed
    )


def test_the_report_shows_who_took_part_in_each_round(tmp_path, flower_task):
    sites = {
        11: ScriptedSite("hospital-a", offset=0.1, train_cases=2),
        12: ScriptedSite("hospital-b", offset=0.2, train_cases=6),
        13: ScriptedSite("hospital-c", offset=0.3, train_cases=8),
    }
    for seed, site in enumerate(sites.values()):
        answers = {rnd: real_validation(3, seed * 10 + rnd) for rnd in range(3)}
        site.evaluate = lambda message, answers=answers: answers[message.content["config"]["server-round"]]

    def lost_in_round_2(message):
        if message.content["config"]["server-round"] == 2:
            sites[13].online = False
            return None
        return trained(message, 0.3, 8)

    sites[13].train = lost_in_round_2
    run_dir = tmp_path / "run"
    config = {
        **DEFAULTS,
        "run-dir": str(run_dir),
        "model-preset": "tiny",
        "num-server-rounds": 2,
        "expected-sites": "hospital-a,hospital-b,hospital-c,hospital-d",
        "train-timeout-s": 0.5,
        "wait-for-sites-s": 1.0,
    }
    run_federation(ScriptedGrid(sites), config)

    data = json.loads((run_dir / "report.json").read_text())
    grid = data["participation"]["sites"]
    assert grid["hospital-a"]["2"]["status"] == "reported" and grid["hospital-a"]["2"]["train"] == "ok"
    assert grid["hospital-c"]["2"]["status"] == "offline"
    assert grid["hospital-c"]["2"]["train"].startswith("offline: lost contact during the phase")
    assert [grid["hospital-d"][str(r)]["status"] for r in (0, 1, 2)] == ["offline"] * 3
    assert data["participation"]["model_updated"]["2"] == {"updated": True, "reason": ""}
    html = (run_dir / "report.html").read_text()
    assert (
        'id="participation"' in html
        and "hospital-d" in html
        and "train: lost contact during the phase" in html
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_missed"] == {"hospital-c": [2], "hospital-d": [0, 1, 2]}
    assert any("hospital-c: round 2" in note for note in data["limitations"])
