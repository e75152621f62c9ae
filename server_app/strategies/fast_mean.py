"""The coordinator's weighted mean of the sites' weights, at close to memory speed.

Flower's FedAvg deserializes every array of every reply (`Array.numpy()`: a copy), multiplies it into a new
array and sums the results (more copies), in float64. Here each reply's array is read in place from its message
bytes (a view after the .npy header, no copy) and added once into a float32 accumulator allocated once per array
(`acc += w·x`: BLAS saxpy, one fused pass per update). float16 updates (transport-dtype float16) are read as they
came and accumulated in float32.

Finiteness is checked once, on the result (its sum): with positive weights the mean is finite exactly when every
update is (an overflow to infinity is refused too). Only when it is not are the updates searched for the culprits.
"""

import io
import math
from collections.abc import Sequence

import numpy as np
from flwr.app import Array, ArrayRecord
from scipy.linalg.blas import saxpy
from threadpoolctl import threadpool_limits

_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...], int, int]] = {}
"""The parsed .npy header of each distinct header: (dtype, shape, element count, offset of the data)."""


def array_view(array: Array) -> np.ndarray:
    """The array's values without copying them: a read-only view into its serialized bytes."""
    data = array.data
    major = data[6] if len(data) > 8 else 0
    size_bytes = 2 if major == 1 else 4
    end = 8 + size_bytes
    if len(data) < end or data[:6] != b"\x93NUMPY":
        return array.numpy()
    offset = end + int.from_bytes(data[8:end], "little")
    header = bytes(data[:offset])
    parsed = _HEADERS.get(header)
    if parsed is None:
        stream = io.BytesIO(header)
        np.lib.format.read_magic(stream)
        read_header = (
            np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(stream)
        if fortran or dtype.hasobject:
            return array.numpy()
        parsed = (dtype, tuple(shape), math.prod(shape), offset)
        if len(_HEADERS) < 100_000:
            _HEADERS[header] = parsed
    dtype, shape, count, offset = parsed
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)


def _is_finite(values: np.ndarray) -> bool:
    """True when every element is finite: one read of the array (x·x, BLAS), no allocation unlike
    isfinite().all(); an overflow (|x| ≳ 1e19) counts as not finite, which weights never reach."""
    return math.isfinite(float(np.dot(values, values)))


class NonFiniteUpdate(ValueError):
    """Some updates hold NaN or infinity; `bad` are their indices with the first offending array's name."""

    def __init__(self, bad: dict[int, str]) -> None:
        super().__init__(f"non-finite weights in update(s) {sorted(bad)}")
        self.bad = bad


def _accumulate(acc: np.ndarray, values: np.ndarray, share: float) -> None:
    """acc += share · values, in place. float32 updates: BLAS saxpy, one fused pass reading the update where it
    lies; float16 updates: converted on the way; others (integers) into a float64 accumulator."""
    flat = values.reshape(-1)
    if acc.dtype == np.float32 and flat.dtype == np.float32:
        saxpy(flat, acc, a=share)
    else:
        np.add(acc, np.multiply(flat, acc.dtype.type(share), dtype=acc.dtype), out=acc)


def weighted_mean(records: Sequence[ArrayRecord], weights: Sequence[float]) -> ArrayRecord:
    """Σ wᵢ·recordᵢ / Σ wᵢ, array by array (same names and shapes in every record, weights > 0).

    Floating-point arrays come back float32; other arrays are averaged in float64 and cast back to their
    dtype. Raises NonFiniteUpdate naming the records with non-finite values.
    """
    if not records:
        raise ValueError("no update to average")
    total = float(sum(weights))
    shares = [float(w) / total for w in weights]
    mean: dict[str, Array] = {}
    finite = True
    # One thread: the mean is bound by memory bandwidth, and BLAS threads only add wake-up costs per array
    with threadpool_limits(limits=1, user_api="blas"):
        finite = _accumulate_all(records, shares, mean)
    if not finite:
        raise NonFiniteUpdate(_non_finite(records))
    return ArrayRecord(mean)


def _accumulate_all(records: Sequence[ArrayRecord], shares: list[float], mean: dict[str, Array]) -> bool:
    """Fill `mean` array by array; returns whether every float array of the mean is finite."""
    finite = True
    for name in records[0]:
        first = array_view(records[0][name])
        is_float = first.dtype.kind == "f"
        acc = np.multiply(first.reshape(-1), shares[0], dtype=np.float32 if is_float else np.float64)
        for index in range(1, len(records)):
            values = array_view(records[index][name])
            if values.shape != first.shape:
                raise ValueError(
                    f"array {name!r} has shape {values.shape} in update {index}, not {first.shape}"
                )
            _accumulate(acc, values, shares[index])
        if is_float:
            finite = finite and _is_finite(acc)
            mean[name] = Array(acc.reshape(first.shape))
        else:
            mean[name] = Array(np.rint(acc).astype(first.dtype).reshape(first.shape))
    return finite


def _non_finite(records: Sequence[ArrayRecord]) -> dict[int, str]:
    """The slow search, only after a non-finite mean: index → name of the first non-finite array."""
    bad = {}
    for index, record in enumerate(records):
        for name, array in record.items():
            values = array_view(array)
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                bad[index] = name
                break
    return bad
