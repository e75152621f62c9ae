"""Secure aggregation (SecAgg+) in the coordinator's loop, against scripted sites whose train replies pass through
the site's real mod (site_app.update_masking) with Flower's crypto: the coordinator's model is FedAvg's within
the quantization error, no message holds a site's update, and a site that dies between masking and unmasking (or
before masking) does not stop the round. A real 3-site run is tests/integration/test_secure_aggregation_run.py."""

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.common import bytes_to_ndarray, ndarray_to_bytes
from flwr.common.secure_aggregation.secaggplus_constants import Key, Stage
from scripted_grid import ScriptedGrid, ScriptedSite, scripted_run_config, trained
from test_federated_loop import assert_same, initial, model, shifted

from models.shared.run_config import RunConfigError
from models.shared.wire import Record
from server_app.app import run_federation
from server_app.coordinator_settings import StrategySettings
from server_app.rounds.reply_checks import ArraySpec
from server_app.rounds.secure_sum import Protocol, masked_reply_problem, weight_caps
from server_app.run_record.run_folder import read_metrics, read_rounds
from site_app.update_masking import clip_update, mask_update

SITES = ["hospital-a", "hospital-b", "hospital-c"]
BOUND = 100.0
"""Scripted training shifts each of the tiny model's 36,230 weights by 0.1-0.3 (update norms 19-57)."""


def stage(message: Message) -> str | None:
    config = message.content.config_records.get(Record.SECAGG)
    return None if config is None else str(config[Key.STAGE])


def secure_site(
    name: str, offset: float, cases: int, node: int, dies_at: str | None = None, sent: list | None = None
) -> ScriptedSite:
    """A scripted site behind the real SecAgg+ mod; it stops answering at stage `dies_at`; every reply content
    it sends is appended to `sent`."""
    context = Context(run_id=1, node_id=node, node_config={}, state=RecordDict(), run_config={})

    def train(message: Message) -> RecordDict | Error | None:
        if dies_at is not None and stage(message) == dies_at:
            return None
        reply = mask_update(message, context, lambda m, _: Message(trained(m, offset, cases), reply_to=m))
        if sent is not None:
            sent.append(reply.content)
        return reply.error if reply.has_error() else reply.content

    return ScriptedSite(name, offset=offset, train_cases=cases, train=train)


def three_secure_sites(
    dies: dict[int, str] | None = None, sent: list | None = None
) -> dict[int, ScriptedSite]:
    dies = dies or {}
    return {
        node: secure_site(name, offset, cases, node, dies.get(node), sent)
        for node, name, offset, cases in (
            (11, SITES[0], 0.1, 2),
            (12, SITES[1], 0.2, 6),
            (13, SITES[2], 0.3, 8),
        )
    }


def secure_config(tmp_path, **settings) -> dict:
    return scripted_run_config(
        tmp_path / "run",
        SITES,
        secure_aggregation=True,
        update_norm_bound=BOUND,
        num_server_rounds=1,
        **settings,
    )


def test_the_model_is_fedavgs_within_the_quantization_error_and_no_reply_holds_an_update(
    tmp_path, flower_task
):
    sent: list[RecordDict] = []
    outcome = run_federation(ScriptedGrid(three_secure_sites(sent=sent)), secure_config(tmp_path))

    assert outcome.status == "completed"
    step = (2 * 0.1 + 6 * 0.2 + 8 * 0.3) / 16  # FedAvg weighs by the cases each site trained on
    assert_same(model(tmp_path / "run", "final"), shifted(initial(tmp_path), step), atol=1e-3)
    (round_1,) = read_rounds(tmp_path / "run")[1:]
    assert round_1["train"]["aggregated"] and round_1["train"]["sound"] == SITES
    assert {r["participation"]["train"] for r in read_metrics(tmp_path / "run") if r["round"] == 1} == {"ok"}

    masked = [c for c in sent if Key.MASKED_PARAMETERS in c.config_records.get(Record.SECAGG, {})]
    assert len(masked) == 3 and not any(c.array_records for c in sent)
    for content in masked:
        vector = [bytes_to_ndarray(raw) for raw in content[Record.SECAGG][Key.MASKED_PARAMETERS]]
        assert len(vector) == 1 + 38
        values = np.concatenate([v.ravel() for v in vector[1:]]).astype(np.float64)
        for offset in (0.1, 0.2, 0.3):  # no site's update, scaled or quantized, is visible
            assert np.mean(np.isclose(values, offset, atol=1e-2)) < 0.01
        assert values.std() > 1e8  # uniform masks over [0, 2^32)


def test_a_site_dead_between_masking_and_unmasking_stays_in_the_sum(tmp_path, flower_task):
    outcome = run_federation(
        ScriptedGrid(three_secure_sites(dies={13: Stage.UNMASK})), secure_config(tmp_path)
    )

    assert outcome.status == "completed"
    step = (2 * 0.1 + 6 * 0.2 + 8 * 0.3) / 16  # its masked update is in the sum; the others' shares unmask it
    assert_same(model(tmp_path / "run", "final"), shifted(initial(tmp_path), step), atol=1e-3)
    assert read_rounds(tmp_path / "run")[1]["train"]["aggregated"]


def test_a_site_dead_before_masking_is_left_out_and_the_round_goes_on(tmp_path, flower_task):
    outcome = run_federation(
        ScriptedGrid(three_secure_sites(dies={13: Stage.COLLECT_MASKED_VECTORS})), secure_config(tmp_path)
    )

    assert outcome.status == "completed"
    step = (2 * 0.1 + 6 * 0.2) / 8  # its pairwise masks removed with its key, rebuilt from the others' shares
    assert_same(model(tmp_path / "run", "final"), shifted(initial(tmp_path), step), atol=1e-3)
    round_1 = {r["site"]: r for r in read_metrics(tmp_path / "run") if r["round"] == 1}
    assert round_1["hospital-c"]["participation"]["train"] == (
        "timeout: secure aggregation, collect_masked_vectors stage: no reply within 1 s"
    )


def test_too_few_sites_left_keep_the_global_model(tmp_path, flower_task):
    outcome = run_federation(
        ScriptedGrid(three_secure_sites(dies={12: Stage.SHARE_KEYS, 13: Stage.SHARE_KEYS})),
        secure_config(tmp_path, min_sites=1),
    )

    assert outcome.status == "completed"
    assert_same(model(tmp_path / "run", "final"), initial(tmp_path))
    reason = read_rounds(tmp_path / "run")[1]["train"]["reason"]
    assert reason == "secure aggregation needs 2 of the round's 3 sites at every stage; 1 left"


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("strategy", "krum", "robust strategy"),
        ("dp-noise-multiplier", 1.0, "central DP"),
        ("update-norm-bound", 0.0, "quantization"),
    ],
)
def test_settings_that_need_plaintext_updates_are_refused(setting, value, named):
    config = {"secure-aggregation": True, setting: value}
    with pytest.raises(RunConfigError, match=f"`secure-aggregation` is True.*{named}"):
        StrategySettings.from_run_config(config)


def test_the_site_clips_float_arrays_to_the_bound():
    update = [np.full(4, 3.0), np.full(12, 1.0)]
    assert clip_update(update, 2.0) == pytest.approx(np.sqrt(36 + 12))
    assert np.sqrt(sum(float((u**2).sum()) for u in update)) == pytest.approx(2.0)
    small = [np.full(4, 0.1)]
    clip_update(small, 2.0)
    assert small[0].tolist() == [0.1] * 4


def test_weight_caps_follow_the_described_cases_capped_like_plaintext():
    assert weight_caps({1: 10, 2: 10, 3: 80}, 1.0) == pytest.approx({1: 10, 2: 10, 3: 80})
    assert weight_caps({1: 10, 2: 10, 3: 80}, 0.5) == pytest.approx({1: 25, 2: 25, 3: 50})


def masked_content(vector: list[np.ndarray], examples: int = 4) -> RecordDict:
    return RecordDict(
        {
            Record.METRICS: MetricRecord({"train-loss": 0.5, "num-examples": examples}),
            Record.SECAGG: ConfigRecord({Key.MASKED_PARAMETERS: [ndarray_to_bytes(v) for v in vector]}),
        }
    )


def test_a_masked_reply_is_checked_for_shapes_range_and_case_count():
    spec = {"w": ArraySpec("float32", (2, 3)), "b": ArraySpec("float32", (3,))}
    protocol = Protocol.for_round(3, 10.0, 8.0)
    shapes = [(1,), (2, 3), (3,)]
    good = [np.array([5]), np.zeros((2, 3), np.int64), np.ones(3, np.int64)]
    assert masked_reply_problem(masked_content(good), spec, shapes, protocol, 10) is None
    wrong_shape = [good[0], np.zeros((3, 2), np.int64), good[2]]
    assert "expected integers (2, 3)" in masked_reply_problem(
        masked_content(wrong_shape), spec, shapes, protocol, 10
    )
    floats = [good[0], good[1].astype(np.float32), good[2]]
    assert "expected integers" in masked_reply_problem(masked_content(floats), spec, shapes, protocol, 10)
    outside = [good[0], good[1], np.full(3, 2**40, np.int64)]
    assert "outside [0, 4294967296)" in masked_reply_problem(
        masked_content(outside), spec, shapes, protocol, 10
    )
    assert "more than the 3 usable cases" in masked_reply_problem(
        masked_content(good, 4), spec, shapes, protocol, 3
    )
    assert "not 3 arrays" in masked_reply_problem(masked_content(good[:2]), spec, shapes, protocol, 10)
