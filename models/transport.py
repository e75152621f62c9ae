"""Weights on the wire: the precision they travel in, and the bytes a message really takes.

With `transport-dtype = float16` every floating-point array of a message's ArrayRecord is cast to float16 by the
sender and back to float32 by the receiver, both ways: training and aggregation stay in float32. A value outside
float16's range (|x| > 65504) is refused rather than silently turned into infinity.

`message_bytes` counts what Flower 1.42 actually moves for a message: the serialized ("deflated") bytes of the
message object and of every record and array below it (the objects its HTTP transport pushes and pulls).
"""

import numpy as np
from flwr.app import Array, ArrayRecord, Message
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

FLOAT16_MAX = float(np.finfo(np.float16).max)


def _is_float(array: Array) -> bool:
    return np.dtype(array.dtype).kind == "f"


def encode(record: ArrayRecord, dtype: str) -> ArrayRecord:
    """`record` as it travels: float arrays in `dtype` ("float32" or "float16"), others unchanged."""
    target = np.dtype(dtype)
    if target not in (np.dtype(np.float32), np.dtype(np.float16)):
        raise ValueError(f"transport dtype must be float32 or float16, got {dtype!r}")
    encoded = {}
    for name, array in record.items():
        if not _is_float(array) or np.dtype(array.dtype) == target:
            encoded[name] = array
            continue
        values = array.numpy()
        if target == np.float16 and values.size and float(np.abs(values).max()) > FLOAT16_MAX:
            raise ValueError(
                f"weights of {name!r} exceed float16's range (±{FLOAT16_MAX:g}); use transport-dtype float32"
            )
        encoded[name] = Array(values.astype(target))
    return ArrayRecord(encoded)


def decode(record: ArrayRecord) -> ArrayRecord:
    """A received record with every float array as float32 (the precision training and aggregation use)."""
    if all(not _is_float(a) or np.dtype(a.dtype) == np.float32 for a in record.values()):
        return record
    return ArrayRecord(
        {
            name: Array(array.numpy().astype(np.float32)) if _is_float(array) else array
            for name, array in record.items()
        }
    )


def as_sent(record: ArrayRecord, dtype: str) -> ArrayRecord:
    """float32 values exactly as the receiver will see them after `encode` (the sender's view of its message)."""
    return record if dtype == "float32" else decode(encode(record, dtype))


def message_bytes(message: Message) -> int:
    """Serialized bytes of the message and all objects below it (records, arrays, array chunks)."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(message).values())
