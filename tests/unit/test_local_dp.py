"""Local DP at the site (site_app.local_dp): the coordinator, reading a train reply, recovers the site's update
exactly without it (the control) and only under noise of σ = z·C per weight with it; the update is clipped to C
first; ε per site composes over the run's rounds with Flower's RDP accountant; the site's own setting decides."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict

from models.presets import build_model
from models.shared.node_config import NodeConfig
from models.shared.run_config import defaults
from models.weights import to_record
from site_app.local_dp import LocalDp, add_local_noise
from site_app.settings.run_settings import SiteRunSettings

SHIFT = 0.01
"""The scripted training adds this to every weight of the tiny model (update norm 0.01 × √36230 ≈ 1.9)."""


def instruction() -> Message:
    arrays = to_record(build_model("tiny", seed=0))
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})})
    return Message(content, dst_node_id=5, message_type=MessageType.TRAIN)


def trained(msg: Message, _: Context) -> Message:
    arrays = msg.content["arrays"]
    updated = ArrayRecord({k: Array((a.numpy() + SHIFT).astype(np.float32)) for k, a in arrays.items()})
    return Message(
        RecordDict({"arrays": updated, "metrics": MetricRecord({"num-examples": 4})}), reply_to=msg
    )


def context(tmp_path, **run_config) -> Context:
    config = {
        **defaults(),
        "sim-data": str(tmp_path / "data"),
        "sim-work": str(tmp_path / "work"),
        **run_config,
    }
    (tmp_path / "data" / "hospital-a").mkdir(parents=True, exist_ok=True)
    return Context(
        run_id=1,
        node_id=5,
        node_config={"partition-id": 0, "num-partitions": 1},
        state=RecordDict(),
        run_config=config,
    )


def recovered_update(msg: Message, reply: Message) -> np.ndarray:
    """What the coordinator reads off a reply: the weights it got minus the weights it sent."""
    sent, got = msg.content["arrays"], reply.content["arrays"]
    return np.concatenate([(got[k].numpy().astype(np.float64) - sent[k].numpy()).ravel() for k in sent])


def test_without_local_dp_the_coordinator_reads_the_update_exactly(tmp_path, flower_task):
    msg = instruction()
    reply = add_local_noise(msg, context(tmp_path), trained)
    assert np.allclose(recovered_update(msg, reply), SHIFT, atol=1e-6)


def test_with_local_dp_the_update_is_clipped_and_hidden_under_noise(tmp_path, flower_task):
    msg = instruction()
    ctx = context(tmp_path, **{"sim-local-dp-noise-multiplier": 0.5, "sim-local-dp-clipping-norm": 1.0})
    reply = add_local_noise(msg, ctx, trained)
    seen = recovered_update(msg, reply)
    clipped = SHIFT / (SHIFT * np.sqrt(seen.size))  # the update scaled to norm C = 1
    assert np.std(seen - clipped) == pytest.approx(0.5, rel=0.02)  # σ = z·C on every weight
    assert abs(np.mean(seen) - clipped) < 0.02  # unbiased: the mean of many sites' updates survives
    assert np.mean(np.isclose(seen, SHIFT, atol=1e-3)) < 0.01
    log = (tmp_path / "work" / "hospital-a" / "logs" / "site.log").read_text()
    assert "local DP: update clipped to 1, Gaussian noise σ = 0.5 added; ε = " in log


def test_epsilon_grows_with_the_rounds_by_flowers_accountant():
    dp = LocalDp(noise_multiplier=1.0, clipping_norm=1.0)
    one, five = dp.epsilon(1), dp.epsilon(5)
    assert 1 < one < five < 5 * one
    assert LocalDp(2.0, 1.0).epsilon(1) < one


def test_a_deployed_sites_own_setting_decides_not_the_run():
    settings = SiteRunSettings.from_run_config({**defaults(), "sim-local-dp-noise-multiplier": 0.0})
    node = {NodeConfig.DATA_PATH: "/data", NodeConfig.LOCAL_DP_NOISE_MULTIPLIER: 1.5}
    assert LocalDp.for_site(node, settings) == LocalDp(1.5, 1.0)
    with pytest.raises(ValueError, match="local-dp-noise-multiplier"):
        LocalDp.for_site({NodeConfig.DATA_PATH: "/data", NodeConfig.LOCAL_DP_NOISE_MULTIPLIER: -1}, settings)
