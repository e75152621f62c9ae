"""Refusals as the coordinator sees them, typed: a site's gate refusal is known by its Error code alone, filed under
the name the coordinator registered the replying node's key under and with the hash of the app the coordinator
started the run with, whatever the reason's text says; a policy refusal names its setting and limit in typed
fields, and a refusal without them is dropped."""

import logging

import pytest
from flwr.app import ConfigRecord, Error, Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from scripted_grid import ScriptedGrid, ScriptedSite, described, scripted_run_config, validated

from models.shared.wire import (
    APP_NOT_APPROVED,
    APP_NOT_APPROVED_CODE,
    OutsideLimit,
    Record,
    Status,
    Training,
    is_app_refusal,
    refusal_reason,
)
from server_app.app import FabIdentity, run_federation
from server_app.rounds.reply_checks import evaluate_reply_problem, train_reply_problem
from server_app.rounds.site_directory import SiteDirectory
from server_app.run_record.run_folder import RunFolder, read_metrics, read_refusals
from site_app.disclosure.refusals import refused_evaluation, refused_training
from site_app.settings.limits import OutsideSiteLimits

RUN_APP = "c" * 64
"""The hash of the app the coordinator started the run with."""
CLAIMED = "d" * 64


def reply(code: int, reason: str, node: int, message_type: str = "train") -> Message:
    request = Message(RecordDict(), dst_node_id=node, message_type=message_type)
    request.metadata.__dict__["_message_id"] = request.object_id
    return Message(Error(code=code, reason=reason), reply_to=request)


def forged_reason(site: str) -> str:
    """A refusal text in the form sites used to send, naming a site and a hash of the sender's choosing."""
    return f"{APP_NOT_APPROVED}: site {site} refused FAB sha256 {CLAIMED}"


def test_the_code_is_the_type():
    assert is_app_refusal(APP_NOT_APPROVED_CODE)
    assert not is_app_refusal(2)  # ClientApp raised: an ordinary failure, whatever its text
    reason = refusal_reason(RUN_APP)
    assert reason.startswith(APP_NOT_APPROVED) and RUN_APP in reason  # for people: no site name to trust


def test_refusals_are_filed_under_the_registered_name_not_the_one_in_the_text(tmp_path, flower_task, caplog):
    run = RunFolder.create(tmp_path / "run", {})
    sites = SiteDirectory(run.append_refusal, RUN_APP)
    sites.note_nodes([NodeInfo(node_id=11, name="hospital-a"), NodeInfo(node_id=12, name="hospital-b")])
    with caplog.at_level(logging.WARNING):
        assert sites.note_refusal(11, reply(APP_NOT_APPROVED_CODE, refusal_reason(RUN_APP), 11), 0)
        assert sites.note_refusal(12, reply(APP_NOT_APPROVED_CODE, forged_reason("hospital-a"), 12), 1)
        assert sites.note_refusal(13, reply(APP_NOT_APPROVED_CODE, forged_reason("hospital-a"), 13), 1)
        assert not sites.note_refusal(14, reply(2, forged_reason("hospital-a"), 14), 1)
    assert sites.refused == {11, 12, 13}
    records = read_refusals(run.path)
    assert [(r["site"], r["round"], r["fab_sha256"], r["node_id"]) for r in records] == [
        ("hospital-a", 0, RUN_APP, 11),
        ("hospital-b", 1, RUN_APP, 12),  # its text claimed hospital-a and another hash
        ("node-13", 1, RUN_APP, 13),  # no registered name: the node id, never the claim
    ]
    assert records[1]["reason"] == forged_reason("hospital-a")  # kept for people, decided nothing
    assert "Site hospital-b refused the app" in caplog.text


def test_a_refusal_in_any_phase_is_filed_and_a_run_every_site_refused_stops(tmp_path, flower_task):
    """hospital-b's gate refuses from the start; hospital-a's from round 1 on (its approval revoked mid-run), first
    in the train phase. Each text names the other site; each refusal is filed under the refusing node's registered
    name, and once neither site runs the app the run stops instead of running empty rounds."""
    revoked = set()

    def refusing(node: int, claim: str, script=None):
        refusal = Error(code=APP_NOT_APPROVED_CODE, reason=forged_reason(claim))

        def answer(message):
            if message.metadata.message_type == "train":
                revoked.add(node)
            return refusal if node in revoked or script is None else script(message)

        return answer

    site_a = ScriptedSite("hospital-a")
    site_a.train = refusing(11, "hospital-b")
    site_a.describe = refusing(11, "hospital-b", lambda m: described("hospital-a", 10))
    site_a.evaluate = refusing(11, "hospital-b", lambda m: validated(0.5, 2))
    site_b = ScriptedSite("hospital-b", describe=refusing(12, "hospital-a"))
    config = scripted_run_config(
        tmp_path / "run", ["hospital-a", "hospital-b"], min_sites=1, round_messages="two"
    )
    outcome = run_federation(ScriptedGrid({11: site_a, 12: site_b}), config, FabIdentity("o", "1", RUN_APP))

    refusals = read_refusals(tmp_path / "run")
    assert {(r["node_id"], r["site"]) for r in refusals} == {(11, "hospital-a"), (12, "hospital-b")}
    assert {r["fab_sha256"] for r in refusals} == {RUN_APP}
    assert ("hospital-a", 1, "train") in {(r["site"], r["round"], r["message_type"]) for r in refusals}
    round_1 = {r["site"]: r for r in read_metrics(tmp_path / "run") if r["round"] == 1}
    assert round_1["hospital-a"]["participation"]["train"].startswith("failed: refused this run's app")
    assert outcome.status == "stopped" and outcome.last_round == 1
    assert "every site online refused this app" in outcome.reason


LIMIT = OutsideLimit("batch-size", 64, "limits.batch-size-max", 16)
REFUSED = OutsideSiteLimits("run setting batch-size = 64 is above this site's limit", LIMIT)


def test_a_policy_refusal_carries_its_setting_and_limit_typed():
    training = refused_training(REFUSED)[Record.TRAINING]
    assert training[Training.STATUS] == Status.REFUSED
    assert OutsideLimit.from_record(training) == LIMIT
    assert train_reply_problem(refused_training(REFUSED), {}, 10) is None
    assert evaluate_reply_problem(refused_evaluation(REFUSED), 10) is None


@pytest.mark.parametrize("drop", OutsideLimit.KEYS)
def test_a_refusal_that_does_not_name_its_setting_and_limit_is_dropped(drop):
    for content, check in (
        (refused_training(REFUSED), lambda c: train_reply_problem(c, {}, 10)),
        (refused_evaluation(REFUSED), lambda c: evaluate_reply_problem(c, 10)),
    ):
        (record,) = content.config_records.values()
        fields = {k: v for k, v in record.items() if k != drop}
        problem = check(RecordDict({next(iter(content.keys())): ConfigRecord(fields)}))
        assert problem is not None and "does not name the setting and limit" in problem


def test_an_unknown_status_is_no_status():
    content = RecordDict(
        {Record.TRAINING: ConfigRecord({Training.STATUS: "on-strike", Training.REASON: "x"})}
    )
    assert train_reply_problem(content, {}, 10) is not None  # neither weights nor a policy status
