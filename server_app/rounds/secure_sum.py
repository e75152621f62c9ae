"""The arithmetic of SecAgg+ at the coordinator: the round's protocol parameters, the sites' weight caps, the
sum of the masked vectors, its unmasking and dequantization, and what a masked train reply must look like.

Flower's primitives do the work (flwr.common.secure_aggregation: Shamir shares, key agreement, pseudo-random
masks, quantization); unmasked_mean is the arithmetic of Flower's SecAggPlusWorkflow.unmask_stage, except that a
dead site's pairwise masks are removed only with the neighbours that added them (those that sent a vector). The
stages that gather the inputs are server_app.rounds.secure_aggregation's.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import Message, RecordDict
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_extract,
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import dequantize
from flwr.common.secure_aggregation.secaggplus_constants import Key, Stage
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

from models.shared.wire import Record
from server_app.rounds.reply_checks import ArraySpec, metrics_problem, train_reply_problem, training_status
from server_app.strategies.site_weight import capped_shares

QUANTIZATION_RANGE = 2**22
"""Flower's default: each weighted value becomes an integer in [0, 2^22]."""
MODULUS_RANGE = 2**32
"""Flower's default: masks and sums are taken modulo 2^32 (room for the sum of 1024 sites' vectors)."""


@dataclass(frozen=True)
class Protocol:
    """The SecAgg+ parameters of one round."""

    num_shares: int
    threshold: int
    clipping_range: float
    max_weight: float
    quantization_range: int = QUANTIZATION_RANGE
    modulus_range: int = MODULUS_RANGE

    @classmethod
    def for_round(cls, n_sites: int, norm_bound: float, max_weight: float) -> "Protocol":
        """Every site shares with every other; a majority (at least 2) of the shares rebuild a secret."""
        return cls(n_sites, max(2, n_sites // 2 + 1), norm_bound, max_weight)

    def setup_config(self) -> dict[str, object]:
        return {
            Key.STAGE: Stage.SETUP,
            Key.SAMPLE_NUMBER: self.num_shares,
            Key.SHARE_NUMBER: self.num_shares,
            Key.THRESHOLD: self.threshold,
            Key.CLIPPING_RANGE: float(self.clipping_range),
            Key.TARGET_RANGE: self.quantization_range,
            Key.MOD_RANGE: self.modulus_range,
            Key.MAX_WEIGHT: float(self.max_weight),
        }


def weight_caps(claimed: Mapping[int, int | None], max_share: float) -> dict[int, float]:
    """Node → the most its update may weigh: its described cases (None: 1) with no share above `max_share`."""
    nodes = sorted(claimed)
    counts = [float(claimed[node] or 1) for node in nodes]
    total = sum(counts)
    shares = capped_shares(counts, max_share) if max_share < 1 else [c / total for c in counts]
    return {node: share * total for node, share in zip(nodes, shares, strict=True)}


class NotEnoughShares(ValueError):
    """A site's secret cannot be rebuilt: fewer shares arrived than the threshold."""


def summed(vectors: Sequence[list[np.ndarray]], protocol: Protocol) -> list[np.ndarray]:
    """The masked vectors' sum, modulo the modulus (what the coordinator holds before unmasking)."""
    total = vectors[0]
    for vector in vectors[1:]:
        total = parameters_addition(total, vector)
    return parameters_mod(total, protocol.modulus_range)


def unmasked_mean(
    masked_sum: list[np.ndarray],
    shares: Mapping[int, list[bytes]],
    active: set[int],
    neighbours: Mapping[int, set[int]],
    public_keys: Mapping[int, tuple[bytes, bytes]],
    protocol: Protocol,
) -> tuple[list[np.ndarray], float]:
    """Remove the masks from the sum (Flower's unmask stage) and dequantize it: the weighted mean update and the
    sum of the weights (in units of max_weight). A dead site's pairwise masks are removed only with the
    surviving neighbours that added them."""
    vector = list(masked_sum)
    shapes = [array.shape for array in vector]
    for node, pieces in shares.items():
        if len(pieces) < protocol.threshold:
            raise NotEnoughShares(
                f"{len(pieces)} shares of a site's secret arrived, {protocol.threshold} are needed to unmask the sum"
            )
        secret = combine_shares(pieces)
        if node in active:
            vector = parameters_subtraction(vector, pseudo_rand_gen(secret, protocol.modulus_range, shapes))
            continue
        for other in sorted((neighbours[node] - {node}) & active):
            key = generate_shared_key(
                bytes_to_private_key(secret), bytes_to_public_key(public_keys[other][0])
            )
            mask = pseudo_rand_gen(key, protocol.modulus_range, shapes)
            vector = (
                parameters_addition(vector, mask) if node > other else parameters_subtraction(vector, mask)
            )
    vector = parameters_mod(vector, protocol.modulus_range)
    q_total, values = factor_extract(vector)
    mean = dequantize(values, protocol.clipping_range, protocol.quantization_range)
    offset = -(len(active) - 1) * protocol.clipping_range
    scale = protocol.quantization_range / float(q_total)
    return [(array + offset) * scale for array in mean], float(q_total) / protocol.quantization_range


def masked_vector(reply: Message) -> list[np.ndarray]:
    return [bytes_to_ndarray(raw) for raw in reply.content[Record.SECAGG][Key.MASKED_PARAMETERS]]


def masked_reply_problem(
    content: RecordDict,
    spec: Mapping[str, ArraySpec],
    shapes: list[tuple[int, ...]],
    protocol: Protocol,
    max_examples: int | None,
) -> str | None:
    """A masked train reply: the plaintext METRICS (case count checked) and the masked vector, one integer array
    per model array after the weight factor, each of the model array's shape and within the modulus; or the
    TRAINING record of a round the site's policy declined or refused."""
    if training_status(content) is not None:
        return train_reply_problem(content, spec, max_examples)
    if set(content.keys()) != {Record.METRICS, Record.SECAGG} or Record.METRICS not in content.metric_records:
        return f"its records are {sorted(content.keys())}; expected exactly {Record.METRICS}, {Record.SECAGG}"
    problem = metrics_problem(content[Record.METRICS], max_examples)
    if problem:
        return problem
    raw = content.config_records[Record.SECAGG].get(Key.MASKED_PARAMETERS)
    if not isinstance(raw, list) or len(raw) != len(shapes) or not all(isinstance(r, bytes) for r in raw):
        return f"its masked vector is not {len(shapes)} arrays"
    for index, (piece, shape) in enumerate(zip(raw, shapes, strict=True)):
        try:
            array = bytes_to_ndarray(piece)
        except Exception as error:  # noqa: BLE001 - any undecodable payload is the site's problem
            return f"masked array {index} cannot be read ({type(error).__name__})"
        if array.dtype.kind not in "iu" or tuple(array.shape) != shape:
            return f"masked array {index} is {array.dtype} {tuple(array.shape)}, expected integers {shape}"
        if array.size and (array.min() < 0 or array.max() >= protocol.modulus_range):
            return f"masked array {index} holds values outside [0, {protocol.modulus_range})"
    return None
