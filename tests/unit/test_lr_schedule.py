"""The coordinator's learning-rate schedule: the share it sends each round, the wrapper that sends it, and a site
that takes the share but refuses one that would make it train faster than its own setting."""

import itertools
import math

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord
from monai.data import Dataset

from models.presets import build_model
from models.shared.run_config import RunConfigError, defaults
from models.shared.wire import LR_SCALE
from server_app.coordinator_settings import StrategySettings
from server_app.strategies.lr_schedule import LearningRateSchedule, lr_share
from server_app.strategies.registry import build_strategy
from server_app.strategies.wrapper import StrategyWrapper, layers
from site_app.learning.training import seed_everything, train_epochs
from site_app.site_message import instruction_lr_scale


def test_cosine_falls_from_one_to_the_final_share_and_constant_stays_at_one():
    shares = [lr_share("cosine", r, 8, 0.1) for r in range(1, 9)]
    assert shares[0] == 1.0 and math.isclose(shares[-1], 0.1)
    assert all(a > b for a, b in itertools.pairwise(shares))
    assert lr_share("cosine", 12, 8, 0.1) == pytest.approx(0.1)  # past the plan: the floor
    assert {lr_share("constant", r, 8, 0.1) for r in range(1, 9)} == {1.0}
    assert lr_share("cosine", 1, 1, 0.1) == 1.0


class Recorder(StrategyWrapper):
    """Innermost stand-in: keeps the config the layers above hand it."""

    def __init__(self) -> None:
        super().__init__(strategy=None)  # type: ignore[arg-type]
        self.configs: list[ConfigRecord] = []

    def configure_train(self, server_round, arrays, config, grid):
        self.configs.append(config)
        return []


def test_the_wrapper_adds_the_rounds_share_without_changing_the_callers_config():
    inner = Recorder()
    wrapper = LearningRateSchedule(inner, "cosine", 5, 0.2)
    config = ConfigRecord({"run-key": "abc"})
    for server_round in (1, 3, 5):
        wrapper.configure_train(server_round, ArrayRecord(), config, grid=None)  # type: ignore[arg-type]
    assert [c[LR_SCALE] for c in inner.configs] == [
        pytest.approx(lr_share("cosine", r, 5, 0.2)) for r in (1, 3, 5)
    ]
    assert LR_SCALE not in config and inner.configs[0]["run-key"] == "abc"


def test_every_run_strategy_carries_the_schedule_and_a_bad_final_share_is_refused():
    settings = StrategySettings.from_run_config(
        {**defaults(), "num-server-rounds": 6, "lr-schedule": "cosine"}
    )
    schedule = [s for s in layers(build_strategy(settings, 3).run) if isinstance(s, LearningRateSchedule)]
    assert len(schedule) == 1 and schedule[0].num_rounds == 6 and schedule[0].schedule == "cosine"
    default = StrategySettings.from_run_config({**defaults(), "num-server-rounds": 6})
    assert [
        s.schedule for s in layers(build_strategy(default, 3).run) if isinstance(s, LearningRateSchedule)
    ] == ["constant"]
    with pytest.raises(RunConfigError, match="lr-final-share"):
        StrategySettings.from_run_config({**defaults(), "lr-final-share": 1.5})
    with pytest.raises(RunConfigError, match="lr-schedule"):
        StrategySettings.from_run_config({**defaults(), "lr-schedule": "step"})


@pytest.mark.parametrize("scale", [0.0, -0.5, 1.5, "fast", True])
def test_a_site_refuses_a_share_outside_zero_to_one(scale):
    with pytest.raises(ValueError, match=LR_SCALE):
        instruction_lr_scale({LR_SCALE: scale})


def test_a_site_takes_a_share_in_range_and_one_when_none_is_sent():
    assert instruction_lr_scale({LR_SCALE: 0.25}) == 0.25
    assert instruction_lr_scale({}) == 1.0


def test_a_smaller_share_moves_the_weights_less():
    generator = torch.Generator().manual_seed(0)
    items = []
    for _ in range(4):
        label = torch.zeros(1, 16, 16, 16, dtype=torch.uint8)
        label[:, 4:12, 4:12, 4:12] = 2
        items.append({"image": torch.randn(1, 16, 16, 16, generator=generator) + label, "label": label})
    moved = {}
    for scale in (1.0, 0.1):
        model = build_model("tiny", seed=0)
        start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        seed_everything(0)
        train_epochs(
            model,
            Dataset(items),
            epochs=1,
            learning_rate=0.01,
            batch_size=2,
            device=torch.device("cpu"),
            seed=0,
            lr_scale=scale,
        )
        moved[scale] = float(
            torch.linalg.vector_norm(torch.cat([p.detach().flatten() for p in model.parameters()]) - start)
        )
    assert moved[0.1] < 0.5 * moved[1.0]
