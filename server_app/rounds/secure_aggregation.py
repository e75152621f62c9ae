"""A training phase under secure aggregation (SecAgg+): the coordinator learns the weighted mean of the sites'
updates, never one site's.

Flower's SecAggPlusWorkflow drives a legacy strategy through `send_and_receive` without deadlines; this is its
stage logic inside our round loop, with Flower's primitives (flwr.common.secure_aggregation: Shamir shares,
key agreement, pseudo-random masks, quantization) and each stage a phase of the loop (deadline, replies matched
to their node, checked, absences filed with why). The site's side is site_app.secure_aggregation.

  setup     every selected site makes two key pairs and sends the public keys (describe-timeout-s);
  share-keys each gets its neighbours' public keys and returns its key shares, encrypted for each neighbour,
            which the coordinator forwards without being able to read them;
  collect   the train instruction, with the shares meant for the site and how to prepare its update
            (SecureUpdate: the run's update-norm-bound, its weight cap) → the masked, weighted, quantized update
            and the plaintext loss and case count (train-timeout-s);
  unmask    the sites still online send the shares that remove the masks: of each surviving site's own mask,
            of the private key of a site that dropped out after sharing its keys (its pairwise masks), never both.
A site that dies between masking and unmasking is still in the sum (the others' shares remove its mask); one
that dies before sending its vector is left out (the others' shares remove its pairwise masks). Every site needs
at least `threshold` (a majority of the round's sites, at least 2) neighbours alive at each stage, otherwise
the round's global model stays as it was. With every site a neighbour of every other, the coordinator
colluding with fewer than `threshold` - 1 sites learns nothing beyond the sum.

Weights: each site weighs its update by min(its training cases, the cap sent to it), the caps being the sites'
described case counts (bounded by max-cases) capped to max-site-weight of their sum (capped_shares, as
plaintext aggregation caps the replies' counts); the coordinator divides the sum by the sum of the weights,
which travels masked with it. What the coordinator can still check per site: the masked vector's count and
shapes and the plaintext case count; not its values, its norm or whether it is finite (the site clips before
masking). Precision: values are quantized to update-norm-bound / 2^21 with unbiased rounding.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from logging import INFO
from typing import cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import bytes_to_ndarray
from flwr.common.logger import log
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

from models.shared.wire import NUM_EXAMPLES, TRAIN_LOSS, Record, SecureUpdate
from server_app.rounds.grid_exchange import POLL_S
from server_app.rounds.participation import PhaseOutcome
from server_app.rounds.reply_checks import ArraySpec, metrics_problem, train_reply_problem, training_status
from server_app.strategies.site_weight import capped_shares

QUANTIZATION_RANGE = 2**22
"""Flower's default: each weighted value becomes an integer in [0, 2^22]."""
MODULUS_RANGE = 2**32
"""Flower's default: masks and sums are taken modulo 2^32 (room for the sum of 1024 sites' vectors)."""
KEY_POLL_S = 0.2
"""How often the short key stages look for replies (the sites answer them in milliseconds)."""

Collect = Callable[
    [str, list[Message], float, Callable[[int, Message], str | None], float],
    tuple[dict[int, Message], dict[int, PhaseOutcome]],
]
"""(phase, messages, deadline, problem of a node's reply, poll interval) → sound replies, outcomes of the others
(server_app.rounds.loop.FederatedLoop._collect)."""


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


@dataclass
class SecureOutcome:
    """What the phase produced: the mean update (None when it could not be unmasked, `reason` says why), the
    sites whose update is in it (their plaintext metrics), the policy replies and the absences."""

    mean: list[np.ndarray] | None = None
    total_weight: float = 0.0
    masked: dict[int, Message] = field(default_factory=dict)
    stopped: dict[int, Message] = field(default_factory=dict)
    """Train replies the site's policy declined or refused (no vector)."""
    absent: dict[int, PhaseOutcome] = field(default_factory=dict)
    reason: str = ""


@dataclass
class SecureTrainPhase:
    """The four stages of one round's secure training phase, run through the loop's `collect`."""

    collect: Collect
    server_round: int
    key_timeout_s: float
    train_timeout_s: float
    norm_bound: float
    outcome: SecureOutcome = field(default_factory=SecureOutcome)

    def run(
        self, messages: Sequence[Message], caps: Mapping[int, float], spec: Mapping[str, ArraySpec], usable
    ) -> SecureOutcome:
        """`messages`: the strategy's train instructions; `caps`: node → weight cap; `usable`: node → the most
        cases it may claim."""
        instructions = {message.metadata.dst_node_id: message for message in messages}
        protocol = Protocol.for_round(len(instructions), self.norm_bound, max(caps.values()))
        nodes = sorted(instructions)
        if len(nodes) < 2:
            return self._stop(f"{len(nodes)} site selected; secure aggregation needs at least 2")
        neighbours = {node: set(nodes) for node in nodes}

        # Setup: public keys
        setup = {node: RecordDict({Record.SECAGG: ConfigRecord(protocol.setup_config())}) for node in nodes}
        replies = self._stage(Stage.SETUP, setup, self.key_timeout_s, _keys_problem)
        public_keys = {node: _keys(reply) for node, reply in replies.items()}
        if problem := self._too_few(public_keys, nodes, protocol):
            return self._stop(problem)

        # Share keys: each site's key shares, encrypted for its neighbours
        share = {
            node: RecordDict(
                {
                    Record.SECAGG: ConfigRecord(
                        {str(n): list(public_keys[n]) for n in neighbours[node] if n in public_keys}
                        | {Key.STAGE: Stage.SHARE_KEYS}
                    )
                }
            )
            for node in public_keys
        }
        replies = self._stage(Stage.SHARE_KEYS, share, self.key_timeout_s, _shares_problem)
        sharing = sorted(replies)  # the round's participants: their shares were sent on
        if problem := self._too_few(replies, nodes, protocol):
            return self._stop(problem)
        forwarded: dict[int, tuple[list[int], list[bytes]]] = {node: ([], []) for node in sharing}
        for source in sharing:
            config = replies[source].content[Record.SECAGG]
            for destination, ciphertext in zip(
                cast(list[int], config[Key.DESTINATION_LIST]),
                cast(list[bytes], config[Key.CIPHERTEXT_LIST]),
                strict=True,
            ):
                if destination in forwarded and destination in neighbours[source]:
                    forwarded[destination][0].append(source)
                    forwarded[destination][1].append(ciphertext)

        # Collect: train, mask
        collect = {
            node: RecordDict(
                {
                    **instructions[node].content,
                    Record.SECAGG: ConfigRecord(
                        {
                            Key.STAGE: Stage.COLLECT_MASKED_VECTORS,
                            Key.CIPHERTEXT_LIST: forwarded[node][1],
                            Key.SOURCE_LIST: forwarded[node][0],
                        }
                    ),
                    Record.SECURE: ConfigRecord(
                        {SecureUpdate.NORM_BOUND: float(self.norm_bound), SecureUpdate.MAX_WEIGHT: caps[node]}
                    ),
                }
            )
            for node in sharing
        }
        shapes = [(1,)] + [expected.shape for expected in spec.values()]
        replies = self._stage(
            Stage.COLLECT_MASKED_VECTORS,
            collect,
            self.train_timeout_s,
            lambda node, reply: masked_reply_problem(reply.content, spec, shapes, protocol, usable(node)),
        )
        for node, reply in replies.items():
            if training_status(reply.content) is None:
                self.outcome.masked[node] = reply
            else:
                self.outcome.stopped[node] = reply
        if problem := self._too_few(self.outcome.masked, nodes, protocol):
            return self._stop(problem)
        masked_sum = summed([masked_vector(reply) for reply in self.outcome.masked.values()], protocol)

        # Unmask
        active = set(self.outcome.masked)
        dead = set(sharing) - active
        unmask = {
            node: RecordDict(
                {
                    Record.SECAGG: ConfigRecord(
                        {
                            Key.STAGE: Stage.UNMASK,
                            Key.ACTIVE_NODE_ID_LIST: sorted(neighbours[node] & active),
                            Key.DEAD_NODE_ID_LIST: sorted(neighbours[node] & dead),
                        }
                    )
                }
            )
            for node in sorted(active)
        }
        replies = self._stage(Stage.UNMASK, unmask, self.key_timeout_s, _unmask_problem)
        shares: dict[int, list[bytes]] = {node: [] for node in sharing}
        for reply in replies.values():
            config = reply.content[Record.SECAGG]
            for owner, piece in zip(
                cast(list[int], config[Key.NODE_ID_LIST]),
                cast(list[bytes], config[Key.SHARE_LIST]),
                strict=True,
            ):
                if owner in shares:
                    shares[owner].append(piece)
        try:
            mean, total = unmasked_mean(masked_sum, shares, active, neighbours, public_keys, protocol)
        except NotEnoughShares as error:
            return self._stop(str(error))
        self.outcome.mean, self.outcome.total_weight = mean, total
        log(
            INFO,
            "Round %d: secure aggregation unmasked the sum of %d updates",
            self.server_round,
            len(active),
        )
        return self.outcome

    def _stage(
        self,
        stage: str,
        contents: Mapping[int, RecordDict],
        timeout_s: float,
        problem_of: Callable[[int, Message], str | None],
    ) -> dict[int, Message]:
        """Send one stage's messages (train messages of this round); node → sound reply; the others filed."""
        messages = [
            Message(content, node, MessageType.TRAIN, group_id=str(self.server_round))
            for node, content in contents.items()
        ]
        poll = POLL_S if stage == Stage.COLLECT_MASKED_VECTORS else KEY_POLL_S
        sound, absent = self.collect(
            f"train (secure aggregation, {stage})", messages, timeout_s, problem_of, poll
        )
        for node, outcome in absent.items():
            self.outcome.absent[node] = PhaseOutcome(
                outcome.status, f"secure aggregation, {stage} stage: {outcome.reason}"
            )
        return sound

    def _too_few(self, alive: Mapping[int, object], nodes: list[int], protocol: Protocol) -> str:
        if len(alive) >= protocol.threshold:
            return ""
        return (
            f"secure aggregation needs {protocol.threshold} of the round's {len(nodes)} sites at every stage; "
            f"{len(alive)} left"
        )

    def _stop(self, reason: str) -> SecureOutcome:
        self.outcome.reason = reason
        return self.outcome


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


def mean_reply(outcome: SecureOutcome, sent: Mapping[str, np.ndarray], instruction: Message) -> Message:
    """The unmasked mean as one train reply, for the strategy to aggregate: the global model as sent plus the
    mean update, weighing the sites' summed cases, with their case-weighted mean loss."""
    metrics = [reply.content[Record.METRICS] for reply in outcome.masked.values()]
    cases = sum(float(m[NUM_EXAMPLES]) for m in metrics)
    loss = sum(float(m[TRAIN_LOSS]) * float(m[NUM_EXAMPLES]) for m in metrics) / cases
    weights = {}
    for (name, value), update in zip(sent.items(), outcome.mean or [], strict=True):
        mean = np.asarray(value, dtype=np.float64) + update
        weights[name] = (
            np.rint(mean).astype(value.dtype) if value.dtype.kind in "iu" else mean.astype(np.float32)
        )
    content = RecordDict(
        {
            Record.ARRAYS: ArrayRecord({name: Array(value) for name, value in weights.items()}),
            Record.METRICS: MetricRecord({TRAIN_LOSS: loss, NUM_EXAMPLES: cases}),
        }
    )
    return Message(content, reply_to=instruction)


def _keys_problem(node: int, reply: Message) -> str | None:
    config = reply.content.config_records.get(Record.SECAGG)
    if config is None or not all(
        isinstance(config.get(k), bytes) for k in (Key.PUBLIC_KEY_1, Key.PUBLIC_KEY_2)
    ):
        return "its setup reply holds no public keys"
    return None


def _keys(reply: Message) -> tuple[bytes, bytes]:
    config = reply.content[Record.SECAGG]
    return cast(bytes, config[Key.PUBLIC_KEY_1]), cast(bytes, config[Key.PUBLIC_KEY_2])


def _shares_problem(node: int, reply: Message) -> str | None:
    config = reply.content.config_records.get(Record.SECAGG)
    destinations = config.get(Key.DESTINATION_LIST) if config else None
    ciphertexts = config.get(Key.CIPHERTEXT_LIST) if config else None
    if (
        not isinstance(destinations, list)
        or not isinstance(ciphertexts, list)
        or len(destinations) != len(ciphertexts)
    ):
        return "its share-keys reply does not pair destinations with encrypted shares"
    return None


def _unmask_problem(node: int, reply: Message) -> str | None:
    config = reply.content.config_records.get(Record.SECAGG)
    owners = config.get(Key.NODE_ID_LIST) if config else None
    pieces = config.get(Key.SHARE_LIST) if config else None
    if not isinstance(owners, list) or not isinstance(pieces, list) or len(owners) != len(pieces):
        return "its unmask reply does not pair sites with shares"
    return None
