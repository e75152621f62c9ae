"""Weights packed on the wire (models.packed_weights, server_app/grid/packed.py, site_app/packed_wire.py):
what is unpacked is exactly what was packed, a model crosses a hop as a handful of objects instead of one per
layer, a malformed layout from the other side is refused by name, and both ends pack what leaves and unpack what
arrives before anything else reads it."""

import json
import logging

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from models.packed_weights import (
    PackingError,
    layout_key,
    pack_content,
    pack_messages,
    pack_record,
    unpack_content,
    unpack_record,
)
from models.presets import build_model
from models.shared.wire import Packing, Record
from models.weights import to_record
from server_app.grid.forwarding import ForwardingGrid
from server_app.grid.packed import PackedGrid
from site_app.packed_wire import packed_weights


def mixed_record() -> ArrayRecord:
    return ArrayRecord(
        {
            "conv.weight": Array(np.arange(24, dtype=np.float32).reshape(2, 3, 4)),
            "conv.bias": Array(np.array([0.5, -1.5], dtype=np.float16)),
            "counter": Array(np.array(7, dtype=np.int64)),
            "empty": Array(np.zeros((0, 3), dtype=np.float32)),
        }
    )


def test_unpacked_is_exactly_what_was_packed():
    record = mixed_record()
    packed, layout = pack_record(record)
    assert list(packed.keys()) == [Packing.PACKED_ARRAY]
    back = unpack_record(packed, layout)
    assert list(back.keys()) == list(record.keys())
    for name in record:
        sent, got = record[name].numpy(), back[name].numpy()
        assert got.dtype == sent.dtype and got.shape == sent.shape and got.tobytes() == sent.tobytes()


def test_a_model_crosses_a_hop_as_a_handful_of_objects(flower_task):
    """The control: the `small` UNet's message as one object per array and chunk (what Flower moves one request
    each); packed, a few objects."""
    arrays = to_record(build_model("small", seed=0))
    content = RecordDict({Record.ARRAYS: arrays, Record.CONFIG: ConfigRecord({"server-round": 1})})
    plain = Message(content, dst_node_id=1, message_type="train")
    packed = Message(pack_content(content), dst_node_id=1, message_type="train")
    assert len(get_all_nested_objects(plain)) > 80
    assert len(get_all_nested_objects(packed)) <= 8
    unpack_content(packed.content)
    assert list(packed.content[Record.ARRAYS].keys()) == list(arrays.keys())
    assert layout_key(Record.ARRAYS) not in packed.content.config_records


def corrupted(change) -> tuple[ArrayRecord, ConfigRecord]:
    packed, layout = pack_record(mixed_record())
    entries = json.loads(str(layout[Packing.LAYOUT]))
    data = packed[Packing.PACKED_ARRAY].numpy()
    entries, data = change(entries, data)
    return ArrayRecord({Packing.PACKED_ARRAY: Array(data)}), ConfigRecord(
        {Packing.LAYOUT: json.dumps(entries)}
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda e, d: (e, np.concatenate([d, np.zeros(4, np.uint8)])),
            "4 packed bytes are not in the layout",
        ),
        (lambda e, d: (e, d[:-1]), "needs more than"),
        (lambda e, d: ([*e[:-1], [e[0][0], "<f4", [0, 3]]], d), "appears twice"),
        (lambda e, d: ([["x", "|O", [1]]], d), "non-numeric dtype"),
        (lambda e, d: ([["x", "<f4", [-1]]], d), "invalid shape"),
        (lambda e, d: ({"x": 1}, d), "must be a list"),
        (lambda e, d: ([["x", "<f4"]], d), "is not [name, dtype, shape]"),
        (lambda e, d: (e, d.astype(np.float32)), "flat uint8"),
    ],
)
def test_a_malformed_packed_record_is_refused_naming_what_is_wrong(change, message):
    packed, layout = corrupted(change)
    with pytest.raises(PackingError, match=message.replace("[", r"\[").replace("]", r"\]")):
        unpack_record(packed, layout, "reply of node 7")


class RecordingGrid(ForwardingGrid):
    """The grid under the packing one: keeps what was pushed and answers pulls with `replies` (no Flower)."""

    def __init__(self, replies: list[Message]) -> None:
        super().__init__(grid=None)  # type: ignore[arg-type]
        self.pushed: list[Message] = []
        self.replies = replies

    def push_messages(self, messages):
        self.pushed = list(messages)
        return [str(i) for i, _ in enumerate(self.pushed)]

    def pull_messages(self, message_ids):
        return self.replies


def test_the_coordinator_pushes_packed_and_reads_replies_unpacked(caplog, flower_task):
    shared = RecordDict({Record.ARRAYS: mixed_record(), Record.CONFIG: ConfigRecord({"server-round": 2})})
    sent = [Message(shared, dst_node_id=node, message_type="train") for node in (11, 12)]
    good = Message(
        pack_content(RecordDict({Record.ARRAYS: mixed_record()})), dst_node_id=0, message_type="train"
    )
    bad_content = pack_content(RecordDict({Record.ARRAYS: mixed_record()}))
    bad_content[layout_key(Record.ARRAYS)] = ConfigRecord({Packing.LAYOUT: "[]"})
    bad = Message(bad_content, dst_node_id=0, message_type="train")
    inner = RecordingGrid([good, bad])
    grid = PackedGrid(inner)
    grid.push_messages(sent)
    assert all(list(m.content[Record.ARRAYS].keys()) == [Packing.PACKED_ARRAY] for m in inner.pushed)
    assert inner.pushed[0].content is inner.pushed[1].content  # one shared content, packed once
    assert list(shared[Record.ARRAYS].keys()) == list(mixed_record().keys())  # the strategy's copy untouched
    with caplog.at_level(logging.WARNING):
        replies = list(grid.pull_messages(["0", "1"]))
    assert list(replies[0].content[Record.ARRAYS].keys()) == list(mixed_record().keys())
    assert list(replies[1].content[Record.ARRAYS].keys()) == [
        Packing.PACKED_ARRAY
    ]  # left for the reply checks
    assert "packed bytes are not in the layout" in caplog.text


def test_the_site_unpacks_before_its_handler_and_packs_its_reply(flower_task):
    seen = {}

    def handler(msg: Message, context: Context) -> Message:
        seen["names"] = list(msg.content[Record.ARRAYS].keys())
        content = RecordDict(
            {Record.ARRAYS: mixed_record(), Record.METRICS: MetricRecord({"num-examples": 3})}
        )
        return Message(content, reply_to=msg)

    instruction = Message(
        pack_content(RecordDict({Record.ARRAYS: mixed_record()})), dst_node_id=0, message_type="train"
    )
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    reply = packed_weights(instruction, context, handler)
    assert seen["names"] == list(mixed_record().keys())
    assert list(reply.content[Record.ARRAYS].keys()) == [Packing.PACKED_ARRAY]
    assert reply.content[Record.METRICS]["num-examples"] == 3
    # a caller that sends its weights unpacked (a test, a benchmark in one process) reads the reply unpacked
    plain = Message(RecordDict({Record.ARRAYS: mixed_record()}), dst_node_id=0, message_type="train")
    reply = packed_weights(plain, context, handler)
    assert list(reply.content[Record.ARRAYS].keys()) == list(mixed_record().keys())


def test_packing_messages_never_changes_the_content_they_shared(flower_task):
    shared = RecordDict({Record.ARRAYS: mixed_record()})
    messages = pack_messages([Message(shared, dst_node_id=n, message_type="train") for n in (1, 2, 3)])
    assert len({id(m.content) for m in messages}) == 1
    assert list(shared[Record.ARRAYS].keys()) == list(mixed_record().keys())
