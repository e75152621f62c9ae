"""Every absence named: one metrics.jsonl record per site per round, the terminal's participation line, and the
report's site × round grid, for sites that trained, were dropped, timed out or were never online."""

import json
import logging
import tomllib
from datetime import datetime
from pathlib import Path

import numpy as np
from flwr.app import Error, Message, RecordDict
from flwr.common.config import flatten_dict
from flwr.common.constant import ErrorCode
from scripted_grid import ScriptedGrid, ScriptedSite, scripted_run_config, trained, validated

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
from server_app.rounds.quorum import Presence
from server_app.run_record.run_folder import read_metrics
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


def test_the_participation_line_names_each_phase_a_site_missed_and_when_it_was_last_heard(flower_task):
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
    assert participation_line(ledger, everyone, {"hospital-c": "14:02:31"}) == (
        "round 3: 2 of 3 sites; hospital-c train and validate offline (last heard at 14:02:31)"
    )
    # back for validation: its validation is reported, its training was missed
    ledger.sites["hospital-c"] = SiteRound(train=NOT_ONLINE, evaluate=OK, evaluation=evaluation)
    assert participation_line(ledger, everyone, {"hospital-c": "14:02:31"}) == (
        "round 3: 2 of 3 sites; hospital-c train offline (last heard at 14:02:31), validate reported"
    )
    del ledger.sites["hospital-c"]
    ledger.sites["hospital-b"].train = PhaseOutcome(Status.TIMEOUT, "no reply within 60 s")
    ledger.sites["hospital-a"] = SiteRound(
        train=OK, evaluate=PhaseOutcome(Status.TIMEOUT, "no reply within 30 s")
    )
    assert participation_line(ledger, everyone, {}) == (
        "round 3: 1 of 3 sites; hospital-a train ok, validate timeout (no reply within 30 s); hospital-b train "
        "timeout (no reply within 60 s), validate reported; hospital-c train and validate offline (not online "
        "when the phase started)"
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
        "round 0: 2 of 3 sites; hospital-b validate suppressed (n < 5); hospital-c validate dropped (its records "
        "are [none])"
    )


def test_last_heard_is_the_last_time_a_site_was_listed_online_or_answered():
    presence = Presence()
    presence.update(["hospital-a", "hospital-c"], now=1000.0)
    presence.heard("hospital-c", 1300.0)  # its training reply arrived later
    presence.update(
        ["hospital-a"], now=1400.0
    )  # hospital-c's absence noticed now: not when it was last heard
    assert presence.last_heard == {"hospital-a": 1400.0, "hospital-c": 1300.0}
    assert Presence.from_state(presence.state()).last_heard == presence.last_heard
    assert presence.last_heard_text()["hospital-c"] == datetime.fromtimestamp(1300.0).strftime(
        "%Y-%m-%d %H:%M:%S"
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
        "round-messages": "two",  # one message per round: tests/unit/test_one_message_rounds.py
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


def test_a_site_back_for_validation_is_named_with_the_training_it_missed(tmp_path, flower_task, caplog):
    """The loop itself: hospital-c goes offline after round 1 and comes back while round 2 trains; its round-2
    validation is reported, and the round's line says it missed training, not that it was offline."""
    sites = {11: ScriptedSite("hospital-a"), 12: ScriptedSite("hospital-b"), 13: ScriptedSite("hospital-c")}

    def gone_after_round_1(message):
        sites[13].online = message.content["config"]["server-round"] != 1
        return validated(0.5, 2)

    def brings_c_back(message):
        sites[13].online = True
        return trained(message, 0.1, 8)

    sites[13].evaluate = gone_after_round_1
    sites[11].train = brings_c_back
    config = scripted_run_config(
        tmp_path / "run", [s.name for s in sites.values()], num_server_rounds=2, round_messages="two"
    )
    with caplog.at_level(logging.INFO):
        run_federation(ScriptedGrid(sites), config)
    line = next(m for m in caplog.messages if m.startswith("round 2: "))
    assert line.startswith("round 2: 2 of 3 sites; hospital-c train offline (last heard at ")
    assert line.endswith(", validate reported")
    record = next(r for r in read_metrics(tmp_path / "run") if (r["round"], r["site"]) == (2, "hospital-c"))
    assert record["status"] == "reported" and record["participation"]["train"].startswith("offline")
