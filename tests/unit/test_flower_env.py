"""The environment of the Flower processes we start: Flower's SuperExec reads our task poll interval from it."""

import pytest
from flwr.supercore.superexec import run_superexec

from deploy.flower_env import PROMPT_FLOWER, flower_env


def test_the_superexec_polls_at_the_interval_our_environment_sets(tmp_path, monkeypatch):
    env = flower_env(tmp_path / "home")
    monkeypatch.setenv("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"])
    assert run_superexec._get_task_poll_interval() == pytest.approx(0.2)
    assert set(PROMPT_FLOWER) <= set(env)


def test_without_it_the_superexec_waits_a_second_between_polls(monkeypatch):
    """The control: Flower's default, which every message's ClientApp launch waited on."""
    monkeypatch.delenv("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", raising=False)
    assert run_superexec._get_task_poll_interval() == pytest.approx(1.0)
