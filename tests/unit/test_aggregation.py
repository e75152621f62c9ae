"""The coordinator's FedAvg: weighted by num-examples, pooled evaluation over what pools exactly, sites whose own
policy sends no numbers left out (reply checks are server_app.rounds.reply_checks, tested in test_reply_checks.py; how
the loop files a site's declined, refused or suppressed reply: test_federated_loop.py)."""

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import Strategy
from strategy_rounds import settings_of

from models.presets import build_model
from models.shared.wire import OutsideLimit
from models.weights import load_record, to_record
from server_app.rounds.loop import ALL_SELECTED
from server_app.strategies.registry import build_strategy
from site_app.disclosure.refusals import refused_evaluation
from site_app.settings.limits import OutsideSiteLimits


def reply_from(node_id: int, arrays: ArrayRecord, metrics: dict) -> Message:
    request = Message(RecordDict(), dst_node_id=node_id, message_type="train")
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=request)


@pytest.fixture
def strategy(flower_task) -> Strategy:
    """The run's strategy with the app's default settings (fedavg), sites weighed by their cases uncapped (the
    max-site-weight cap is tested in test_adversaries.py)."""
    return build_strategy(settings_of(max_site_weight=1.0), 2, **ALL_SELECTED).run


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


SITE = {
    "dice-mean": 0.5,
    "dice-wt-mean": 0.6,
    "dice-wt-median": 0.62,
    "empty-pred-wt": 1,
    "n-cases": 4,
    "num-examples": 4,
}


def test_pooled_evaluation_has_only_what_pools_exactly(strategy):
    replies = [
        reported(11, SITE),
        reported(12, {**SITE, "dice-wt-mean": 0.1, "empty-pred-wt": 2, "n-cases": 6, "num-examples": 6}),
    ]
    pooled = strategy.aggregate_evaluate(1, replies)
    assert pooled["dice-wt-mean"] == pytest.approx((4 * 0.6 + 6 * 0.1) / 10)
    assert pooled["empty-pred-wt"] == 3 and pooled["n-cases"] == 10
    assert "dice-wt-median" not in pooled  # a median of medians is not the median: left out


def test_a_suppressed_site_is_left_out_of_the_pooled_evaluation(strategy):
    pooled = strategy.aggregate_evaluate(2, [reported(11, SITE), suppressed(12)])
    assert pooled["dice-mean"] == pytest.approx(0.5) and pooled["n-cases"] == 4


def test_a_round_where_every_site_is_suppressed_has_no_pooled_evaluation(strategy):
    assert strategy.aggregate_evaluate(1, [suppressed(11), suppressed(12, minimum=10)]) is None


def test_a_refused_evaluation_is_left_out_of_the_pooled_evaluation(strategy):
    reason = "run setting patch-size = 512 is above this site's limit limits.patch-size-max = 160"
    outside = OutsideLimit("patch-size", 512, "limits.patch-size-max", 160)
    refused = reply_to(12, "evaluate", refused_evaluation(OutsideSiteLimits(reason, outside)))
    pooled = strategy.aggregate_evaluate(2, [reported(11, SITE), refused])
    assert pooled["dice-mean"] == 0.5 and pooled["n-cases"] == 4


def reply_to(node_id: int, kind: str, content: RecordDict) -> Message:
    return Message(content, reply_to=Message(RecordDict(), dst_node_id=node_id, message_type=kind))


def test_sites_whose_policy_withholds_different_statistics_pool_only_what_all_sent(strategy):
    """One site has medians (n >= its min-position-cases) and n-skipped, another neither: only what both sent is
    pooled (no partial n-skipped sum), and each reply keeps its own numbers for the site's own record."""
    larger = {**SITE, "n-cases": 12, "num-examples": 12, "dice-wt-q1": 0.5, "dice-wt-q3": 0.7, "n-skipped": 0}
    smaller = {k: v for k, v in SITE.items() if k != "dice-wt-median"}
    replies = [reported(11, larger), reported(12, smaller)]
    pooled = strategy.aggregate_evaluate(3, replies)
    assert pooled["n-cases"] == 16 and "n-skipped" not in pooled
    assert pooled["dice-wt-mean"] == pytest.approx(0.6)
    assert dict(replies[0].content["metrics"]) == larger and dict(replies[1].content["metrics"]) == smaller
