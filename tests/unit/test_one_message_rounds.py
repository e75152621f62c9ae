"""One message per site per round (run config `round-messages` one): the fused reply's parsing, the loop filing
each part under its own round and phase, and the same metrics.jsonl numbers as two messages per round."""

import logging
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from scripted_grid import ScriptedGrid, ScriptedSite, scripted_run_config, trained, validated

from models.shared.round_reply import (
    failed_validation,
    fuse_round_reply,
    split_round_reply,
    validation_failure,
)
from server_app.app import run_federation
from server_app.coordinator_settings import ServerRunSettings
from server_app.run_record.run_folder import read_metrics
from site_app.site_message import SiteMessage

SITES = ["hospital-a", "hospital-b", "hospital-c"]


def train_content() -> RecordDict:
    return RecordDict(
        {"arrays": ArrayRecord(), "metrics": MetricRecord({"train-loss": 0.5, "num-examples": 4})}
    )


def test_a_fused_reply_splits_into_the_two_replies_it_holds():
    training, validation = train_content(), validated(0.7, 3)
    fused = fuse_round_reply(training, validation)

    assert set(fused.keys()) == {"arrays", "metrics", "validation", "validation-metrics"}
    train_part, validation_part = split_round_reply(fused)
    assert set(train_part.keys()) == {"arrays", "metrics"}
    assert dict(train_part["metrics"]) == dict(training["metrics"])
    assert set(validation_part.keys()) == {"validation", "metrics"}
    assert dict(validation_part["metrics"]) == dict(validation["metrics"])


def test_a_policy_reply_in_either_part_splits_with_exactly_its_records():
    declined = RecordDict({"training": ConfigRecord({"status": "declined", "reason": "n < 4"})})
    suppressed = RecordDict({"validation": ConfigRecord({"status": "suppressed", "min-report-cases": 3})})

    train_part, validation_part = split_round_reply(fuse_round_reply(declined, suppressed))

    assert set(train_part.keys()) == {"training"} and set(validation_part.keys()) == {"validation"}
    assert (
        split_round_reply(train_content())[1] == RecordDict()
    )  # no validation: an empty part, checked as such


def test_fusing_refuses_records_that_would_collide():
    with pytest.raises(ValueError, match="cannot fuse"):
        fuse_round_reply(train_content(), RecordDict({"arrays": ArrayRecord()}))
    with pytest.raises(ValueError, match="cannot fuse"):
        fuse_round_reply(RecordDict({"validation-metrics": MetricRecord()}), validated(0.5, 2))


@pytest.mark.parametrize("asked", [2, -1, True, "1"])
def test_a_site_accepts_only_an_earlier_round_to_validate(flower_task, asked):
    config = ConfigRecord({"server-round": 2, "evaluate-round": asked})
    message = Message(RecordDict({"config": config}), dst_node_id=5, message_type="train")
    site_message = SiteMessage(message, None, None, {}, logging.getLogger(), 1)  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="evaluate-round"):
        site_message.evaluate_round()
    config["evaluate-round"] = 1
    assert site_message.evaluate_round() == 1 and site_message.server_round == 2
    assert site_message.for_validation(1).server_round == 1


def sites_with_round_dice() -> dict[int, ScriptedSite]:
    """Sites whose validation depends on the model they get (its first weight) and the round."""
    sites = {
        11 + i: ScriptedSite(name, offset=0.1 * (i + 1), train_cases=2 + 2 * i)
        for i, name in enumerate(SITES)
    }
    for i, site in enumerate(sites.values()):

        def dice(message, i=i):
            first = next(iter(message.content["arrays"].values())).numpy().ravel()[0]
            rnd = message.content["config"]["server-round"]
            return validated(round(float(abs(first)) % 1 * 0.5 + 0.1 * i + 0.01 * rnd, 6), 2 + i)

        site.evaluate = dice
    return sites


def run(run_dir: Path, sites: dict[int, ScriptedSite], **settings) -> ScriptedGrid:
    grid = ScriptedGrid(sites)
    run_federation(grid, scripted_run_config(run_dir, SITES, **settings))
    return grid


def test_one_message_per_round_files_the_numbers_of_two(tmp_path, flower_task):
    one = run(tmp_path / "one", sites_with_round_dice(), num_server_rounds=3, round_messages="one")
    run(tmp_path / "two", sites_with_round_dice(), num_server_rounds=3, round_messages="two")

    def numbers(run_dir):
        return {
            (r["round"], r["site"]): (r["status"], r["metrics"], r["n_cases"], r["train"], r["participation"])
            for r in read_metrics(run_dir)
        }

    assert numbers(tmp_path / "one") == numbers(tmp_path / "two")
    assert len(numbers(tmp_path / "one")) == 4 * 3
    kinds = [m.metadata.message_type for m in one.pushed if not m.metadata.message_type.startswith("query")]
    assert kinds == ["train"] * 9 + ["evaluate"] * 3  # one message per site per round, then one to validate


def test_a_site_missing_a_message_is_named_in_both_rounds_it_spans(tmp_path, flower_task, caplog):
    sites = sites_with_round_dice()
    sites[13].train = lambda m: None if m.content["config"]["server-round"] == 2 else trained(m, 0.3, 6)

    with caplog.at_level(logging.WARNING):
        run(tmp_path / "run", sites, num_server_rounds=2, train_timeout_s=0.2, evaluate_timeout_s=0.2)

    records = {(r["round"], r["site"]): r for r in read_metrics(tmp_path / "run")}
    assert records[(1, "hospital-c")]["participation"] == {
        "train": "ok",
        "evaluate": "timeout: no reply within 0.4 s",
    }
    assert records[(2, "hospital-c")]["participation"]["train"] == "timeout: no reply within 0.4 s"
    assert records[(2, "hospital-c")]["participation"]["evaluate"] == "ok"  # the validate-only message
    assert "Round 1: site hospital-c missed evaluate: timeout" in caplog.text
    assert "Round 2: site hospital-c missed train: timeout" in caplog.text


def test_an_unsound_validation_part_is_dropped_and_the_training_kept(tmp_path, flower_task):
    sites = sites_with_round_dice()

    sound = sites[13].evaluate
    sites[13].evaluate = lambda m: (
        RecordDict({"validation": ConfigRecord()}) if m.content["config"]["server-round"] == 0 else sound(m)
    )

    run(tmp_path / "run", sites, num_server_rounds=1)

    records = {(r["round"], r["site"]): r for r in read_metrics(tmp_path / "run")}
    assert records[(0, "hospital-c")]["participation"]["evaluate"].startswith("dropped: its records are")
    assert records[(1, "hospital-c")]["participation"]["train"] == "ok"


def test_a_validation_that_failed_at_the_site_is_filed_failed_and_its_training_kept(tmp_path, flower_task):
    """As with two messages, where a failed evaluate message leaves the train reply alone."""
    reason = "site failed in evaluate (ValueError); details are in the site log"
    assert validation_failure(
        split_round_reply(fuse_round_reply(train_content(), failed_validation(reason)))[1]
    )
    assert validation_failure(validated(0.5, 2)) is None
    sites = sites_with_round_dice()
    sound = sites[13].evaluate
    sites[13].evaluate = lambda m: (
        failed_validation(reason) if m.content["config"]["server-round"] == 1 else sound(m)
    )

    run(tmp_path / "run", sites, num_server_rounds=2)

    records = {(r["round"], r["site"]): r for r in read_metrics(tmp_path / "run")}
    assert records[(1, "hospital-c")]["participation"] == {"train": "ok", "evaluate": f"failed: {reason}"}
    assert records[(1, "hospital-c")]["status"] == "failed"
    assert records[(2, "hospital-c")]["participation"]["train"] == "ok"
    assert [
        r["site"] for r in read_metrics(tmp_path / "run") if r["round"] == 2 and r["status"] == "reported"
    ] == SITES


def test_secure_aggregation_keeps_two_messages_per_round(tmp_path):
    config = scripted_run_config(tmp_path / "run", SITES)
    assert ServerRunSettings.from_run_config(config).one_message
    assert not ServerRunSettings.from_run_config({**config, "round-messages": "two"}).one_message
    assert not ServerRunSettings.from_run_config(
        {**config, "secure-aggregation": True, "update-norm-bound": 10.0}
    ).one_message
