"""The coordinator's FedAvg: weighted by num-examples, robust to one bad site, and to sites whose own policy
suppresses their numbers, declines to train or refuses the run."""

import json
import logging

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from models.presets import build_model
from models.weights import load_record, to_record
from server_app.run_folder import RunFolder
from server_app.site_directory import SiteDirectory
from server_app.strategy import SiteFedAvg
from site_app.disclosure import refused_evaluation
from site_app.disclosure_policy import DisclosurePolicy
from site_app.policy_replies import declined_training, refused_training


def reply_from(node_id: int, arrays: ArrayRecord, metrics: dict) -> Message:
    request = Message(RecordDict(), dst_node_id=node_id, message_type="train")
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=request)


@pytest.fixture
def strategy(tmp_path, flower_task) -> SiteFedAvg:
    keys = build_model("tiny").state_dict().keys()
    return SiteFedAvg(
        sites=SiteDirectory(),
        run=RunFolder.create(tmp_path / "run", {}),
        model_keys=keys,
        min_train_nodes=2,
        min_evaluate_nodes=2,
        min_available_nodes=2,
    )


def test_global_weights_are_the_example_weighted_mean(strategy):
    site_a, site_b = build_model("tiny", seed=1), build_model("tiny", seed=2)
    replies = [
        reply_from(11, to_record(site_a), {"train-loss": 0.5, "num-examples": 3}),
        reply_from(12, to_record(site_b), {"train-loss": 0.7, "num-examples": 7}),
    ]

    arrays, metrics = strategy.aggregate_train(1, replies)

    merged = build_model("tiny")
    load_record(merged, arrays)
    a, b = site_a.state_dict(), site_b.state_dict()
    for name, value in merged.state_dict().items():
        expected = (3 * a[name].double() + 7 * b[name].double()) / 10
        assert torch.allclose(value.double(), expected, atol=1e-6), name
    assert metrics["train-loss"] == pytest.approx((3 * 0.5 + 7 * 0.7) / 10)


def test_a_non_finite_reply_is_dropped_and_its_site_named(strategy, caplog):
    good = build_model("tiny", seed=1)
    poisoned = build_model("tiny", seed=2)
    with torch.no_grad():
        next(poisoned.parameters()).fill_(float("nan"))
    replies = [
        reply_from(11, to_record(good), {"train-loss": 0.5, "num-examples": 3}),
        reply_from(12, to_record(poisoned), {"train-loss": 0.7, "num-examples": 7}),
    ]

    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, _ = strategy.aggregate_train(1, replies)

    assert any("node-12" in r.getMessage() and "not finite" in r.getMessage() for r in caplog.records)
    for name, value in good.state_dict().items():
        np.testing.assert_allclose(arrays[name].numpy(), value.numpy(), atol=1e-7)


def test_a_reply_with_other_parameter_names_is_dropped(strategy):
    good = build_model("tiny", seed=1)
    other = build_model("small", seed=2)
    replies = [
        reply_from(11, to_record(good), {"train-loss": 0.5, "num-examples": 3}),
        reply_from(12, to_record(other), {"train-loss": 0.7, "num-examples": 7}),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert set(arrays.keys()) == set(good.state_dict().keys())


def evaluate_reply(node_id: int, content: dict) -> Message:
    request = Message(RecordDict(), dst_node_id=node_id, message_type="evaluate")
    return Message(RecordDict(content), reply_to=request)


def reported(node_id: int, metrics: dict) -> Message:
    return evaluate_reply(
        node_id,
        {
            "validation": ConfigRecord(
                {"status": "reported", "min-report-cases": 5, "regions": ["wt", "tc", "et"]}
            ),
            "metrics": MetricRecord(metrics),
        },
    )


def suppressed(node_id: int, minimum: int = 5) -> Message:
    return evaluate_reply(
        node_id,
        {
            "validation": ConfigRecord(
                {"status": "suppressed", "min-report-cases": minimum, "regions": ["wt", "tc", "et"]}
            )
        },
    )


def filed(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


SITE = {
    "dice-mean": 0.5,
    "dice-wt-mean": 0.6,
    "dice-wt-median": 0.62,
    "empty-pred-wt": 1,
    "n-cases": 4,
    "num-examples": 4,
}


def test_evaluation_is_filed_per_site(strategy, tmp_path):
    replies = [reported(11, SITE), reported(12, {**SITE, "dice-mean": 0.9, "n-cases": 1, "num-examples": 1})]
    aggregated = strategy.aggregate_evaluate(3, replies)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"site": "node-11"' in lines[0] and '"round": 3' in lines[0]
    assert aggregated["dice-mean"] == pytest.approx((4 * 0.5 + 1 * 0.9) / 5)


def test_pooled_evaluation_has_only_what_pools_exactly(strategy):
    replies = [
        reported(11, SITE),
        reported(12, {**SITE, "dice-wt-mean": 0.1, "empty-pred-wt": 2, "n-cases": 6, "num-examples": 6}),
    ]
    pooled = strategy.aggregate_evaluate(1, replies)
    assert pooled["dice-wt-mean"] == pytest.approx((4 * 0.6 + 6 * 0.1) / 10)
    assert pooled["empty-pred-wt"] == 3 and pooled["n-cases"] == 10
    assert "dice-wt-median" not in pooled  # a median of medians is not the median: left out


def test_a_suppressed_site_is_filed_as_such_and_never_ends_the_run(strategy, tmp_path):
    pooled = strategy.aggregate_evaluate(2, [reported(11, SITE), suppressed(12)])
    records = filed(tmp_path)
    by_site = {r["site"]: r for r in records}
    assert by_site["node-12"]["status"] == "suppressed" and by_site["node-12"]["metrics"] == {}
    assert by_site["node-12"]["n_cases"] is None and by_site["node-12"]["min_report_cases"] == 5
    assert by_site["node-11"]["status"] == "reported" and by_site["node-11"]["n_cases"] == 4
    assert pooled["dice-mean"] == pytest.approx(0.5) and pooled["n-cases"] == 4


def test_a_round_where_every_site_is_suppressed_has_no_pooled_evaluation(strategy, tmp_path):
    assert strategy.aggregate_evaluate(1, [suppressed(11), suppressed(12, minimum=10)]) is None
    assert [r["status"] for r in filed(tmp_path)] == ["suppressed", "suppressed"]


def test_a_suppressed_reply_that_carries_metrics_is_dropped(strategy, tmp_path, caplog):
    leaky = evaluate_reply(
        12,
        {
            "validation": ConfigRecord({"status": "suppressed", "min-report-cases": 5}),
            "metrics": MetricRecord(SITE),
        },
    )
    with caplog.at_level(logging.WARNING, logger="flwr"):
        strategy.aggregate_evaluate(1, [reported(11, SITE), leaky])
    assert [r["site"] for r in filed(tmp_path)] == ["node-11"]
    assert any("node-12" in r.getMessage() and "suppressed" in r.getMessage() for r in caplog.records)


def test_a_reply_with_other_metric_names_is_dropped_not_fatal(strategy, tmp_path, caplog):
    replies = [reported(11, SITE), reported(12, SITE), reported(13, {**SITE, "dice-xx-mean": 0.3})]
    with caplog.at_level(logging.WARNING, logger="flwr"):
        pooled = strategy.aggregate_evaluate(1, replies)
    assert pooled["dice-mean"] == pytest.approx(0.5)
    assert sorted(r["site"] for r in filed(tmp_path)) == ["node-11", "node-12"]
    assert any("node-13" in r.getMessage() and "metric names" in r.getMessage() for r in caplog.records)


def test_a_reply_with_a_status_outside_the_contract_is_dropped(strategy, tmp_path, caplog):
    odd = evaluate_reply(12, {"validation": ConfigRecord({"status": "partial", "min-report-cases": 5})})
    with caplog.at_level(logging.WARNING, logger="flwr"):
        strategy.aggregate_evaluate(1, [reported(11, SITE), odd])
    assert [r["site"] for r in filed(tmp_path)] == ["node-11"]
    assert any("node-12" in r.getMessage() and "'partial'" in r.getMessage() for r in caplog.records)


# A site's policy replies (site_app.policy_replies, site_app.disclosure): no weights or no numbers, never fatal


def test_sites_that_decline_or_refuse_to_train_are_left_out_and_the_round_goes_on(strategy, caplog):
    policy = DisclosurePolicy.from_node_config({})
    good = build_model("tiny", seed=1)
    replies = [
        reply_from(11, to_record(good), {"train-loss": 0.5, "num-examples": 6}),
        reply_to(12, "train", declined_training("n < 5", policy)),
        reply_to(13, "train", refused_training("run setting spacing-mm = 0.1 is outside this site's limits")),
    ]
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, metrics = strategy.aggregate_train(1, replies)
    for name, value in good.state_dict().items():
        np.testing.assert_allclose(arrays[name].numpy(), value.numpy(), atol=1e-7)
    assert metrics["train-loss"] == pytest.approx(0.5)  # the training site alone
    messages = [r.getMessage() for r in caplog.records]
    assert "Site node-12 declined to train in round 1: n < 5" in messages
    assert any(
        m.startswith("Site node-13 refused to train in round 1: run setting spacing-mm = 0.1")
        for m in messages
    )
    assert strategy._train_metrics[12] == {"status": "declined", "reason": "n < 5"}


def test_a_round_where_every_site_declines_keeps_the_global_model(strategy):
    policy = DisclosurePolicy.from_node_config({})
    replies = [reply_to(node, "train", declined_training("n < 5", policy)) for node in (11, 12)]
    assert strategy.aggregate_train(1, replies) == (None, None)  # Strategy.start keeps the current arrays


def test_a_refused_evaluation_is_filed_with_its_reason(strategy, tmp_path):
    reason = "run setting patch-size = 512 is above this site's limit limits.patch-size-max = 160"
    pooled = strategy.aggregate_evaluate(
        2, [reported(11, SITE), reply_to(12, "evaluate", refused_evaluation(reason))]
    )
    assert pooled["dice-mean"] == 0.5
    by_site = {r["site"]: r for r in filed(tmp_path)}
    assert by_site["node-12"]["status"] == "refused" and by_site["node-12"]["reason"] == reason
    assert by_site["node-12"]["metrics"] == {} and by_site["node-12"]["n_cases"] is None


def reply_to(node_id: int, kind: str, content: RecordDict) -> Message:
    return Message(content, reply_to=Message(RecordDict(), dst_node_id=node_id, message_type=kind))


def test_sites_whose_policy_withholds_different_statistics_are_all_filed_and_pooled(strategy, tmp_path):
    """One site has medians (n >= its min-position-cases) and n-skipped, another neither: both are filed with
    their own numbers; only what both sent is pooled (no partial n-skipped sum)."""
    larger = {**SITE, "n-cases": 12, "num-examples": 12, "dice-wt-q1": 0.5, "dice-wt-q3": 0.7, "n-skipped": 0}
    smaller = {k: v for k, v in SITE.items() if k != "dice-wt-median"}
    pooled = strategy.aggregate_evaluate(3, [reported(11, larger), reported(12, smaller)])
    by_site = {r["site"]: r for r in filed(tmp_path)}
    assert by_site["node-11"]["metrics"] == {k: v for k, v in larger.items() if k != "num-examples"}
    assert by_site["node-12"]["metrics"] == {k: v for k, v in smaller.items() if k != "num-examples"}
    assert pooled["n-cases"] == 16 and "n-skipped" not in pooled
    assert pooled["dice-wt-mean"] == pytest.approx(0.6)
