"""A message's weights as one array on the wire instead of one object per layer.

Flower 1.42 moves a message object by object: the message, each record, each array and each array chunk is one
request at every hop (ServerApp → SuperLink → SuperNode → ClientApp and back). The `small` UNet is 75 arrays,
about 95 objects, so one model crossing one hop was about 95 requests, and on a 2-core host with four sites a
SuperNode took 3-6 s to pull one model from the SuperLink (bench/RESULTS.md, overhead). Packed, an ArrayRecord of
n ≥ 2 arrays is one array of bytes (one object, plus a chunk per 5 MB) and a small layout record beside it.

`pack_content` is applied to everything that leaves (the coordinator's grid, server_app/grid/packed.py;
the site's replies, site_app/packed_wire.py) and `unpack_content` to everything that arrives, before any other
code reads it: strategies, checks, local DP and masking all see the arrays by name, exactly as sent (dtypes,
shapes and bytes unchanged). A packed record from the other side is checked before use: a layout that is not a
list of [name, dtype, shape] with unique names and numeric dtypes, or whose sizes do not add up to the bytes,
raises PackingError naming what is wrong.
"""

import json
import math
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from models.shared.wire import Packing

ALLOWED_KINDS = frozenset("fiub")
"""numpy dtype kinds a packed array may have: floats, signed and unsigned integers, booleans."""


class PackingError(ValueError):
    """A packed ArrayRecord whose layout does not describe its bytes."""


def layout_key(record_key: str) -> str:
    """The ConfigRecord key that holds the layout of the packed ArrayRecord `record_key`."""
    return record_key + Packing.LAYOUT_SUFFIX


def pack_record(record: ArrayRecord) -> tuple[ArrayRecord, ConfigRecord]:
    """`record` as one uint8 array of every array's bytes (in order) and the layout that takes it apart."""
    layout, parts = [], []
    for name, array in record.items():
        values = array.numpy()
        layout.append([name, values.dtype.str, list(values.shape)])
        parts.append(np.ascontiguousarray(values).reshape(-1).view(np.uint8))  # 0-d arrays: one element
    packed = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return (
        ArrayRecord({Packing.PACKED_ARRAY: Array(packed)}),
        ConfigRecord({Packing.LAYOUT: json.dumps(layout, separators=(",", ":"))}),
    )


def unpack_record(packed: ArrayRecord, layout: ConfigRecord, where: str = "message") -> ArrayRecord:
    """The ArrayRecord `pack_record` packed: same names, order, dtypes, shapes and bytes. PackingError otherwise."""
    if list(packed.keys()) != [Packing.PACKED_ARRAY]:
        raise PackingError(
            f"{where}: a packed record holds only {Packing.PACKED_ARRAY!r}, got {list(packed.keys())}"
        )
    data = packed[Packing.PACKED_ARRAY].numpy()
    if data.dtype != np.uint8 or data.ndim != 1:
        raise PackingError(f"{where}: packed bytes must be a flat uint8 array, got {data.dtype} {data.shape}")
    try:
        entries = json.loads(str(layout[Packing.LAYOUT]))
    except (KeyError, json.JSONDecodeError) as error:
        raise PackingError(f"{where}: unreadable layout ({error})") from None
    if not isinstance(entries, list):
        raise PackingError(f"{where}: the layout must be a list of [name, dtype, shape]")
    arrays, offset, names = {}, 0, set()
    for entry in entries:
        name, dtype, shape = _entry(entry, where)
        if name in names:
            raise PackingError(f"{where}: array {name!r} appears twice in the layout")
        names.add(name)
        size = math.prod(shape) * dtype.itemsize
        if offset + size > data.size:
            raise PackingError(
                f"{where}: the layout needs more than the {data.size} packed bytes at {name!r}"
            )
        arrays[name] = Array(data[offset : offset + size].view(dtype).reshape(shape).copy())
        offset += size
    if offset != data.size:
        raise PackingError(f"{where}: {data.size - offset} packed bytes are not in the layout")
    return ArrayRecord(arrays)


def _entry(entry: object, where: str) -> tuple[str, np.dtype, tuple[int, ...]]:
    if not (
        isinstance(entry, list)
        and len(entry) == 3
        and isinstance(entry[0], str)
        and isinstance(entry[2], list)
    ):
        raise PackingError(f"{where}: layout entry {entry!r} is not [name, dtype, shape]")
    name, dtype_text, shape = entry
    try:
        dtype = np.dtype(dtype_text)
    except TypeError:
        raise PackingError(f"{where}: array {name!r} has an unknown dtype {dtype_text!r}") from None
    if dtype.kind not in ALLOWED_KINDS or dtype.hasobject:
        raise PackingError(f"{where}: array {name!r} has a non-numeric dtype {dtype_text!r}")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise PackingError(f"{where}: array {name!r} has an invalid shape {shape!r}")
    return name, dtype, tuple(shape)


def pack_content(content: RecordDict) -> RecordDict:
    """A new RecordDict: every ArrayRecord of two or more arrays packed, its layout beside it; the rest as is."""
    packed = RecordDict()
    for key, record in content.items():
        if isinstance(record, ArrayRecord) and len(record) >= 2:
            packed[key], packed[layout_key(key)] = pack_record(record)
        else:
            packed[key] = record
    return packed


def unpack_content(content: RecordDict, where: str = "message") -> RecordDict:
    """`content` with every packed ArrayRecord taken apart and its layout record removed (in place)."""
    for key in [k for k in content.array_records if layout_key(k) in content.config_records]:
        layout = content.config_records[layout_key(key)]
        content[key] = unpack_record(content.array_records[key], layout, f"{where}, record {key!r}")
        del content[layout_key(key)]
    return content


def pack_messages(messages: Iterable[Message]) -> list[Message]:
    """The messages, each with its content packed (a content shared by several messages is packed once)."""
    messages = list(messages)
    done: dict[int, tuple[RecordDict, RecordDict]] = {}
    """id of a content → (that content, kept alive so its id stays its own; its packed form)."""
    for message in messages:
        original = message.content
        if id(original) not in done:
            done[id(original)] = (original, pack_content(original))
        message.content = done[id(original)][1]
    return messages
