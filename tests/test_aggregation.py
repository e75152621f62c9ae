"""The coordinator's FedAvg: weighted by num-examples, robust to one bad site."""

import logging

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from models.presets import build_model
from models.weights import load_record, to_record
from server_app.run_folder import RunFolder
from server_app.site_directory import SiteDirectory
from server_app.strategy import SiteFedAvg


def reply_from(node_id: int, arrays: ArrayRecord, metrics: dict) -> Message:
    request = Message(RecordDict(), dst_node_id=node_id, message_type="train")
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=request)


@pytest.fixture
def strategy(tmp_path, flower_task) -> SiteFedAvg:
    keys = build_model("tiny").state_dict().keys()
    return SiteFedAvg(sites=SiteDirectory(), run=RunFolder.create(tmp_path / "run", {}), model_keys=keys,
                      min_train_nodes=2, min_evaluate_nodes=2, min_available_nodes=2)


def test_global_weights_are_the_example_weighted_mean(strategy):
    site_a, site_b = build_model("tiny", seed=1), build_model("tiny", seed=2)
    replies = [reply_from(11, to_record(site_a), {"train-loss": 0.5, "num-examples": 3}),
               reply_from(12, to_record(site_b), {"train-loss": 0.7, "num-examples": 7})]

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
    replies = [reply_from(11, to_record(good), {"train-loss": 0.5, "num-examples": 3}),
               reply_from(12, to_record(poisoned), {"train-loss": 0.7, "num-examples": 7})]

    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, _ = strategy.aggregate_train(1, replies)

    assert any("node-12" in r.getMessage() and "not finite" in r.getMessage() for r in caplog.records)
    for name, value in good.state_dict().items():
        np.testing.assert_allclose(arrays[name].numpy(), value.numpy(), atol=1e-7)


def test_a_reply_with_other_parameter_names_is_dropped(strategy):
    good = build_model("tiny", seed=1)
    other = build_model("small", seed=2)
    replies = [reply_from(11, to_record(good), {"train-loss": 0.5, "num-examples": 3}),
               reply_from(12, to_record(other), {"train-loss": 0.7, "num-examples": 7})]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert set(arrays.keys()) == set(good.state_dict().keys())


def test_evaluation_is_filed_per_site(strategy, tmp_path):
    metrics = {"dice-mean": 0.5, "dice-wt-mean": 0.6, "n-cases": 4, "num-examples": 4}
    request_a = Message(RecordDict(), dst_node_id=11, message_type="evaluate")
    request_b = Message(RecordDict(), dst_node_id=12, message_type="evaluate")
    replies = [Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=request_a),
               Message(RecordDict({"metrics": MetricRecord({**metrics, "dice-mean": 0.9, "num-examples": 1})}),
                       reply_to=request_b)]
    aggregated = strategy.aggregate_evaluate(3, replies)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"site": "node-11"' in lines[0] and '"round": 3' in lines[0]
    assert aggregated["dice-mean"] == pytest.approx((4 * 0.5 + 1 * 0.9) / 5)
