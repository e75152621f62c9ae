"""A site's refusal of an unapproved app, as the coordinator sees it: the error reply names the site and the
FAB's hash (models/shared/wire.py), the coordinator files it under the site's name in refusals.jsonl and its log."""

import logging

from flwr.app import Error, Message, RecordDict

from models.shared.wire import APP_NOT_APPROVED, APP_NOT_APPROVED_CODE, parse_refusal, refusal_reason
from server_app.rounds.site_directory import SiteDirectory
from server_app.run_record.run_folder import RunFolder, read_refusals

HASH = "c" * 64


def reply(code: int, reason: str, node: int, message_type: str = "train") -> Message:
    request = Message(RecordDict(), dst_node_id=node, message_type=message_type)
    request.metadata.__dict__["_message_id"] = request.object_id
    answer = Message(Error(code=code, reason=reason), reply_to=request)
    answer.metadata.__dict__["_src_node_id"] = node
    return answer


def test_the_reason_round_trips():
    reason = refusal_reason("hospital-a", HASH)
    assert reason.startswith(APP_NOT_APPROVED)
    refusal = parse_refusal(APP_NOT_APPROVED_CODE, reason)
    assert refusal is not None and (refusal.site, refusal.fab_hash) == ("hospital-a", HASH)
    assert parse_refusal(2, reason) is None  # another error code: an ordinary failure
    assert parse_refusal(APP_NOT_APPROVED_CODE, "The FAB could not be verified.") is None


def test_refusals_are_filed_under_the_site_name(tmp_path, flower_task, caplog):
    run = RunFolder.create(tmp_path / "run", {})
    sites = SiteDirectory(on_refusal=run.append_refusal)
    with caplog.at_level(logging.WARNING):
        assert sites.note_refusal(reply(APP_NOT_APPROVED_CODE, refusal_reason("hospital-a", HASH), 11), 0)
        assert sites.note_refusal(reply(APP_NOT_APPROVED_CODE, refusal_reason("hospital-b", HASH), 12), 1)
        assert not sites.note_refusal(reply(2, "site failed in train (ValueError)", 13), 1)
    assert sites.name(11) == "hospital-a" and sites.refused == {11, 12}
    records = read_refusals(run.path)
    assert [(r["site"], r["round"], r["fab_sha256"], r["node_id"]) for r in records] == [
        ("hospital-a", 0, HASH, 11),
        ("hospital-b", 1, HASH, 12),
    ]
    assert "Site hospital-a refused the app" in caplog.text and APP_NOT_APPROVED in caplog.text
