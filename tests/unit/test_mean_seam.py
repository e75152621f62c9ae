"""The seam the fast mean hooks into (server_app.strategies.mean_seam): Flower still averages there, the hook answers
only inside FastMean's scope, and a strategy that steps from the mean or selects before averaging gets the fast
mean while one that does not average is untouched."""

import types

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedYogi,
    MultiKrum,
    Strategy,
    fedavg,
    multikrum,
)
from flwr.serverapp.strategy.fedopt import FedOpt
from strategy_rounds import train_round

from models.transport import encode
from server_app.strategies import mean_seam
from server_app.strategies.fast_mean import weighted_mean
from server_app.strategies.mean_wrapper import FastMean

NODES = {"min_train_nodes": 1, "min_evaluate_nodes": 1, "min_available_nodes": 1}


def update(*values: float) -> ArrayRecord:
    return ArrayRecord(
        {"w": Array(np.array(values, np.float32)), "n": Array(np.array([len(values)], np.int64))}
    )


UPDATES = [(update(1.0, 2.0, 3.0), 1), (update(2.0, 4.0, 8.0), 2), (update(3.0, 6.0, 9.0), 5)]
START = update(0.0, 0.0, 0.0)


def test_flower_averages_through_the_module_level_function_the_seam_replaces():
    """If a Flower upgrade moves the averaging, this fails before the fast mean silently stops being used."""
    for strategy_class, module in ((FedAvg, fedavg), (MultiKrum, multikrum)):
        assert "aggregate_arrayrecords" in strategy_class.aggregate_train.__code__.co_names
        assert strategy_class.aggregate_train.__globals__ is vars(module)
    assert (
        FedProx.aggregate_train is FedAvg.aggregate_train and FedOpt.aggregate_train is FedAvg.aggregate_train
    )
    for server_optimizer in (FedAdam, FedYogi):  # step from super().aggregate_train, FedAvg's
        assert "super" in server_optimizer.aggregate_train.__code__.co_names
    mean_seam.install()
    assert all(module.aggregate_arrayrecords is mean_seam.dispatch for module in mean_seam.SEAM_MODULES)


def test_outside_fast_means_scope_flower_averages_as_ever(flower_task):
    FastMean(FedAvg(**NODES))  # installs the seam
    flower, _ = train_round(FedAvg(**NODES), 1, START, UPDATES, dtype="float16")
    assert (
        flower["w"].numpy().dtype == np.float16
    )  # Flower's mean keeps the replies' dtype; the fast mean's is float32
    fast, _ = train_round(FastMean(FedAvg(**NODES)), 1, START, UPDATES, dtype="float16")
    assert fast["w"].numpy().dtype == np.float32
    np.testing.assert_allclose(fast["w"].numpy(), flower["w"].numpy(), rtol=1e-3)


def test_a_server_optimizer_steps_from_the_fast_mean(flower_task):
    adam = FedAdam(**NODES, eta=0.5)
    with mean_seam.observed_means() as means:
        train_round(FastMean(adam), 1, START, UPDATES)
    assert len(means) == 1
    expected = weighted_mean([arrays for arrays, _ in UPDATES], [n for _, n in UPDATES])
    for name in expected:
        np.testing.assert_array_equal(means[0][name].numpy(), expected[name].numpy())
    assert adam.m_t is not None  # Flower's FedAdam took its step from that mean


def test_multikrum_averages_the_replies_it_selected_with_the_fast_mean(flower_task):
    krum = MultiKrum(**NODES, num_malicious_nodes=0, num_nodes_to_select=2)
    arrays, _ = train_round(FastMean(krum), 1, START, UPDATES, dtype="float16")
    # the two closest to each other, as they came (float16)
    selected = weighted_mean([encode(UPDATES[i][0], "float16") for i in (1, 2)], [2, 5])
    assert arrays["w"].numpy().dtype == np.float32
    np.testing.assert_array_equal(arrays["w"].numpy(), selected["w"].numpy())


def test_a_strategy_that_does_not_average_is_untouched(flower_task):
    plain: Strategy = FedMedian(**NODES)
    expected, _ = train_round(plain, 1, START, UPDATES)
    with mean_seam.observed_means() as means:
        arrays, _ = train_round(FastMean(FedMedian(**NODES)), 1, START, UPDATES)
    assert means == []
    np.testing.assert_array_equal(arrays["w"].numpy(), expected["w"].numpy())
    assert arrays["w"].numpy().tolist() == [2.0, 4.0, 8.0]


def test_a_seam_someone_else_replaced_is_refused(monkeypatch):
    elsewhere = types.ModuleType("elsewhere")
    elsewhere.aggregate_arrayrecords = lambda records, weighted_by_key: ArrayRecord()
    monkeypatch.setattr(mean_seam, "SEAM_MODULES", (fedavg, elsewhere))
    with pytest.raises(mean_seam.SeamMoved, match="elsewhere.aggregate_arrayrecords is not flwr's"):
        mean_seam.install()
