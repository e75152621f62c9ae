"""The coordinator's strategies: the fast weighted mean equals Flower's, FedAdam's state survives a save/load,
a bad strategy setting is refused naming it, central DP is calibrated and accounted, weights travel in the
transport dtype, and each run gets its base strategy inside the wrappers its settings call for."""

import io
import re

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    RdpAccountant,
    SamplingMethod,
)
from flwr.serverapp.strategy import FedAvg, FedMedian, FedProx, FedYogi
from strategy_rounds import settings_of, sites_grid, train_round

from models.presets import build_model
from models.shared.run_config import STRATEGIES, RunConfigError, defaults
from models.transport import as_sent, decode, encode, message_bytes
from models.weights import to_record
from server_app.coordinator_settings import StrategySettings
from server_app.rounds.loop import ALL_SELECTED
from server_app.strategies.base import BASE_STRATEGIES, Named
from server_app.strategies.central_dp import CentralDp
from server_app.strategies.fast_mean import array_view, weighted_mean
from server_app.strategies.lr_schedule import LearningRateSchedule
from server_app.strategies.mean_wrapper import FastMean
from server_app.strategies.pooled_evaluation import PooledEvaluation
from server_app.strategies.registry import build_strategy
from server_app.strategies.server_optimizer import ServerOptimizer
from server_app.strategies.site_weight import SiteWeightCap
from server_app.strategies.transport_dtype import Transport
from server_app.strategies.update_direction import UpdateDirection
from server_app.strategies.update_norm import UpdateNormBound
from server_app.strategies.wrapper import layers


def reply_from(node_id: int, arrays: ArrayRecord, n_examples: int) -> Message:
    request = Message(RecordDict(), dst_node_id=node_id, message_type="train")
    metrics = MetricRecord({"train-loss": 0.5, "num-examples": n_examples})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=request)


def test_the_fast_mean_equals_flowers_fedavg(flower_task):
    models = [build_model("tiny", seed=s) for s in (1, 2, 3)]
    records = [to_record(m) for m in models]
    replies = [reply_from(10 + i, r, n) for i, (r, n) in enumerate(zip(records, (3, 5, 9), strict=True))]
    flower, _ = FedAvg(min_train_nodes=3).aggregate_train(1, replies)
    fast = weighted_mean(records, [3, 5, 9])
    for name in flower:
        assert fast[name].numpy().dtype == np.float32
        np.testing.assert_allclose(fast[name].numpy(), flower[name].numpy(), rtol=1e-6, atol=1e-7)


def test_the_fast_mean_reads_float16_and_integer_arrays_and_refuses_non_finite_ones():
    a = ArrayRecord({"w": Array(np.array([1.0, 2.0], np.float16)), "n": Array(np.array([2, 4], np.int64))})
    b = ArrayRecord({"w": Array(np.array([3.0, 6.0], np.float16)), "n": Array(np.array([4, 8], np.int64))})
    mean = weighted_mean([a, b], [1, 3])
    assert mean["w"].numpy().tolist() == [2.5, 5.0] and mean["w"].numpy().dtype == np.float32
    assert mean["n"].numpy().tolist() == [4, 7] and mean["n"].numpy().dtype == np.int64
    bad = ArrayRecord(
        {"w": Array(np.array([np.inf, 1.0], np.float16)), "n": Array(np.array([1, 1], np.int64))}
    )
    with pytest.raises(ValueError, match=r"update\(s\) \[1\]"):
        weighted_mean([a, bad], [1, 1])


def test_array_view_reads_the_message_bytes_without_copying():
    record = to_record(build_model("tiny", seed=0))
    for array in record.values():
        view = array_view(array)
        np.testing.assert_array_equal(view, array.numpy())
        assert not view.flags.owndata and not view.flags.writeable


def models(*seeds: int) -> list[ArrayRecord]:
    return [to_record(build_model("tiny", seed=seed)) for seed in seeds]


@pytest.mark.parametrize("strategy", ["fedadam", "fedyogi"])
def test_the_server_optimizer_state_survives_a_save_and_load(flower_task, strategy):
    settings = settings_of(strategy=strategy, server_lr=0.01)
    (start,) = models(0)
    first = list(zip(models(1, 2), (3, 5), strict=True))
    second = list(zip(models(3, 4), (3, 5), strict=True))

    original = build_strategy(settings, 2, **ALL_SELECTED).run
    after_one, _ = train_round(original, 1, start, first)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    saved = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert saved["strategy"] == strategy and set(saved["m_t"]) == set(start.keys())
    resumed = build_strategy(settings, 2, **ALL_SELECTED).run
    resumed.load_state_dict(saved)
    fresh = build_strategy(settings, 2, **ALL_SELECTED).run

    expected, _ = train_round(original, 2, after_one, second)
    continued, _ = train_round(resumed, 2, after_one, second)
    restarted, _ = train_round(fresh, 2, after_one, second)
    for name in start:
        np.testing.assert_array_equal(continued[name].numpy(), expected[name].numpy())
    assert any(not np.array_equal(restarted[n].numpy(), expected[n].numpy()) for n in start)


def test_a_saved_state_of_another_strategy_is_refused():
    adam = build_strategy(settings_of(strategy="fedadam"), 2, **ALL_SELECTED).run
    yogi = build_strategy(settings_of(strategy="fedyogi"), 2, **ALL_SELECTED).run
    with pytest.raises(ValueError, match="'fedadam'.*'fedyogi'"):
        yogi.load_state_dict(adam.state_dict())


def test_central_dp_is_refused_with_a_server_optimizer_naming_the_setting():
    config = {**defaults(), "strategy": "fedadam", "dp-noise-multiplier": 1.0}
    with pytest.raises(
        RunConfigError, match="`dp-noise-multiplier` is 1.0, expected 0 with strategy 'fedadam'"
    ):
        StrategySettings.from_run_config(config)
    assert StrategySettings.from_run_config({**config, "strategy": "fedprox"}).dp


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("strategy", "fedsgd", "`strategy` is 'fedsgd', expected one of fedavg, fedprox, fedadam, fedyogi"),
        ("transport-dtype", "int8", "`transport-dtype` is 'int8', expected one of float32, float16"),
        ("local-norm", "yes", "`local-norm` is 'yes', expected true or false"),
        ("beta2", 1.0, "`beta2` is 1.0, expected a number in [0, 1)"),
        ("proximal-mu", -0.1, "`proximal-mu` is -0.1, expected at least 0"),
        ("server-lr", 0, "`server-lr` is 0.0, expected a number above 0"),
        ("dp-delta", 1, "`dp-delta` is 1.0, expected a number in (0, 1)"),
    ],
)
def test_a_bad_strategy_setting_names_the_key_and_what_it_accepts(key, value, message):
    with pytest.raises(RunConfigError, match=re.escape(message)):
        StrategySettings.from_run_config({**defaults(), key: value})


def test_float16_transport_halves_the_bytes_and_round_trips_to_what_the_site_trains(flower_task):
    record = to_record(build_model("small", seed=0))
    sent = {
        dtype: message_bytes(
            Message(
                RecordDict({"arrays": encode(record, dtype), "config": ConfigRecord({"server-round": 1})}),
                dst_node_id=5,
                message_type="train",
            )
        )
        for dtype in ("float32", "float16")
    }
    assert 0.49 < sent["float16"] / sent["float32"] < 0.51
    received = decode(encode(record, "float16"))
    for name, array in received.items():
        assert array.numpy().dtype == np.float32
        np.testing.assert_array_equal(array.numpy(), as_sent(record, "float16")[name].numpy())
        np.testing.assert_allclose(array.numpy(), record[name].numpy(), rtol=1e-3, atol=1e-4)
    huge = ArrayRecord({"w": Array(np.array([1e6], np.float32))})
    with pytest.raises(ValueError, match="float16's range"):
        encode(huge, "float16")


def test_the_server_optimizer_steps_float_arrays_only(flower_task):
    def record(weight: float, count: int) -> ArrayRecord:
        return ArrayRecord(
            {"w": Array(np.full(3, weight, np.float32)), "count": Array(np.array([count], np.int64))}
        )

    adam = build_strategy(settings_of(strategy="fedadam", server_lr=0.5), 2, **ALL_SELECTED).run
    arrays, _ = train_round(adam, 1, record(0.0, 0), [(record(1.0, 10), 1), (record(3.0, 20), 1)])
    assert arrays["count"].numpy().tolist() == [15] and arrays["count"].numpy().dtype == np.int64
    assert not np.allclose(arrays["w"].numpy(), 2.0)  # the optimizer's step, not the mean


def test_central_dp_clips_each_update_adds_calibrated_noise_and_accounts_epsilon_per_round(flower_task):
    settings = settings_of(dp_noise_multiplier=0.8, dp_clipping_norm=0.1)
    (start,) = models(0)
    strategies = build_strategy(settings, 2, **ALL_SELECTED)
    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=settings.dp_delta,
            population_size=2,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )
    flat_start = np.concatenate([a.numpy().ravel() for a in start.values()])
    epsilons, expected = [], []
    for server_round in (1, 2):
        updates = models(server_round, 10 + server_round)
        arrays, _ = train_round(strategies.run, server_round, start, list(zip(updates, (3, 9), strict=True)))
        clipped = []
        for update in updates:  # each site's update clipped to the norm; equal weights, not 3 : 9
            delta = np.concatenate([update[k].numpy().ravel() for k in start]) - flat_start
            clipped.append(delta * min(1.0, settings.dp_clipping_norm / np.linalg.norm(delta)))
        noise = np.concatenate([arrays[k].numpy().ravel() for k in start]) - flat_start
        noise -= np.mean(clipped, axis=0)
        sigma = settings.dp_noise_multiplier * settings.dp_clipping_norm / 2
        assert abs(noise.mean()) < 0.05 * sigma and noise.std() == pytest.approx(sigma, rel=0.05)
        epsilons.append(strategies.privacy(server_round)["epsilon"])
        accountant.compose(GaussianPrivacyEvent(settings.dp_noise_multiplier, 2, 2))
        expected.append(accountant.get_privacy_spent().epsilon)
    assert epsilons == pytest.approx(expected, rel=1e-12) and epsilons[0] < epsilons[1]
    assert strategies.privacy(1)["delta"] == settings.dp_delta
    assert build_strategy(settings_of(), 2, **ALL_SELECTED).privacy(1) is None  # no central DP, no ε


def test_the_base_strategies_are_the_run_configs_choices():
    assert tuple(BASE_STRATEGIES) == STRATEGIES


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {},
            [
                Transport,
                LearningRateSchedule,
                UpdateNormBound,
                UpdateDirection,
                SiteWeightCap,
                FastMean,
                PooledEvaluation,
                Named,
                FedAvg,
            ],
        ),
        (
            {"strategy": "fedprox", "max_site_weight": 1.0, "update_min_cosine": -1.0},
            [Transport, LearningRateSchedule, UpdateNormBound, FastMean, PooledEvaluation, Named, FedProx],
        ),
        (
            {"strategy": "fedyogi"},
            [
                Transport,
                LearningRateSchedule,
                UpdateNormBound,
                UpdateDirection,
                SiteWeightCap,
                FastMean,
                PooledEvaluation,
                Named,
                ServerOptimizer,
                FedYogi,
            ],
        ),
        (
            {"dp_noise_multiplier": 1.0},
            [
                Transport,
                LearningRateSchedule,
                UpdateNormBound,
                UpdateDirection,
                CentralDp,
                FastMean,
                PooledEvaluation,
                Named,
                FedAvg,
            ],
        ),
        (
            {"strategy": "fedmedian"},
            [
                Transport,
                LearningRateSchedule,
                UpdateNormBound,
                UpdateDirection,
                SiteWeightCap,
                FastMean,
                PooledEvaluation,
                Named,
                FedMedian,
            ],
        ),
    ],
)
def test_each_run_gets_its_base_strategy_inside_the_wrappers_its_settings_call_for(overrides, expected):
    run = build_strategy(settings_of(**overrides), 3, **ALL_SELECTED).run
    assert [type(layer) for layer in layers(run)] == expected
    fast_mean = next(layer for layer in layers(run) if isinstance(layer, FastMean))
    assert fast_mean.uniform_weights == ("dp_noise_multiplier" in overrides)  # central DP: equal weights


@pytest.mark.parametrize("strategy", list(BASE_STRATEGIES))
def test_weights_leave_in_the_transport_dtype_and_the_strategy_keeps_what_the_sites_received(
    flower_task, strategy
):
    settings = settings_of(strategy=strategy, transport_dtype="float16")
    run = build_strategy(settings, 5, **ALL_SELECTED).run
    (model,) = models(0)
    train = list(run.configure_train(1, model, ConfigRecord(), sites_grid(2)))
    evaluate = list(run.configure_evaluate(1, model, ConfigRecord(), sites_grid(2)))
    for messages in (train, evaluate):
        assert len(messages) == 2 and len({id(m.content["arrays"]) for m in messages}) == 1  # encoded once
        for array in messages[0].content["arrays"].values():
            assert np.dtype(array.dtype) == np.float16
    optimizer = next((layer for layer in layers(run) if isinstance(layer, ServerOptimizer)), None)
    if optimizer is not None:  # FedOpt steps from the weights as the sites received them
        for name, kept in optimizer.optimizer.current_arrays.items():
            np.testing.assert_array_equal(kept, as_sent(model, "float16")[name].numpy())
    if strategy == "fedprox":
        assert train[0].content["config"]["proximal-mu"] == settings.proximal_mu


@pytest.mark.parametrize("strategy", list(BASE_STRATEGIES))
def test_a_non_finite_update_is_dropped_and_the_others_are_aggregated(flower_task, strategy):
    settings = settings_of(strategy=strategy)
    start, a, b = models(0, 1, 2)
    broken = ArrayRecord({name: Array(np.full_like(x.numpy(), np.nan)) for name, x in a.items()})
    with_broken = build_strategy(settings, 5, **ALL_SELECTED).run
    without = build_strategy(settings, 5, **ALL_SELECTED).run
    arrays, metrics = train_round(with_broken, 1, start, [(a, 3), (broken, 4), (b, 5)])
    expected, expected_metrics = train_round(without, 1, start, [(a, 3), (b, 5)])
    for name in start:
        np.testing.assert_array_equal(arrays[name].numpy(), expected[name].numpy())
    assert dict(metrics) == dict(expected_metrics)
