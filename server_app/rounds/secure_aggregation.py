"""A training phase under secure aggregation (SecAgg+): the coordinator learns the weighted mean of the sites'
updates, never one site's.

Flower's SecAggPlusWorkflow drives a legacy strategy through `send_and_receive` without deadlines; this is its
stage logic inside our round loop, with Flower's primitives (flwr.common.secure_aggregation: Shamir shares,
key agreement, pseudo-random masks, quantization) and each stage a phase of the loop (deadline, replies matched
to their node, checked, absences filed with why); the arithmetic (masked sum, unmasking) is
server_app.rounds.secure_sum's. The site's side is site_app.update_masking.

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
colluding with fewer than `threshold` sites learns nothing beyond the sum.

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
from typing import TYPE_CHECKING, cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.common.secure_aggregation.secaggplus_constants import Key, Stage

from models.shared.wire import NUM_EXAMPLES, TRAIN_LOSS, Record, SecureUpdate
from models.transport import as_sent
from server_app.rounds.grid_exchange import POLL_S
from server_app.rounds.participation import PhaseOutcome, RoundLedger
from server_app.rounds.phase_filing import file_training, unchanged
from server_app.rounds.reply_checks import (
    ArraySpec,
    conform,
    in_transport_dtype,
    too_few_replies,
    training_status,
)
from server_app.rounds.secure_sum import (
    NotEnoughShares,
    Protocol,
    masked_reply_problem,
    masked_vector,
    summed,
    unmasked_mean,
    weight_caps,
)

if TYPE_CHECKING:  # the loop calls secure_train; only its type is needed here
    from server_app.rounds.loop import FederatedLoop

KEY_POLL_S = 0.2
"""How often the short key stages look for replies (the sites answer them in milliseconds)."""

Collect = Callable[
    [str, list[Message], float, Callable[[int, Message], str | None], float],
    tuple[dict[int, Message], dict[int, PhaseOutcome]],
]
"""(phase, messages, deadline, problem of a node's reply, poll interval) → sound replies, outcomes of the others
(server_app.rounds.phase_replies.PhaseReplies.collect)."""


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


def secure_train(
    loop: "FederatedLoop",
    server_round: int,
    arrays: ArrayRecord,
    spec: dict[str, ArraySpec],
    selected: dict[int, str],
    ledger: RoundLedger,
    messages: list[Message],
) -> tuple[ArrayRecord, dict]:
    """The training phase of `loop`'s round under secure aggregation: the strategy aggregates one reply, the
    unmasked weighted mean of the sites' updates."""
    strategy = loop.settings.strategy
    phase = SecureTrainPhase(
        lambda phase, sent, timeout_s, problem_of, poll_s: loop.replies.collect(
            server_round, phase, sent, timeout_s, problem_of, poll_s
        ),
        server_round,
        key_timeout_s=loop.settings.describe_timeout_s,
        train_timeout_s=loop.settings.train_timeout_s,
        norm_bound=strategy.update_norm_bound,
    )
    caps = weight_caps(
        {node: loop.directory.usable_cases(node) for node in selected}, strategy.max_site_weight
    )
    sent_spec = in_transport_dtype(spec, loop.transport_dtype)
    outcome = phase.run(messages, caps, sent_spec, loop.directory.usable_cases)
    for node, absence in outcome.absent.items():
        ledger.site(selected[node]).train = absence
    for node, reply in {**outcome.stopped, **outcome.masked}.items():
        file_training(server_round, ledger, selected[node], reply)
    used = [selected[node] for node in sorted(outcome.masked, key=selected.get)]
    record = {"asked": sorted(selected.values()), "sound": used, "secure_aggregation": True}
    if outcome.mean is None:
        return arrays, record | unchanged(server_round, outcome.reason)
    if len(outcome.masked) < loop.settings.min_sites:
        return arrays, record | unchanged(server_round, too_few_replies(len(used), loop.settings.min_sites))
    sent = {name: array.numpy() for name, array in as_sent(arrays, loop.transport_dtype).items()}
    aggregated, _ = loop.strategy.aggregate_train(server_round, [mean_reply(outcome, sent, messages[0])])
    if aggregated is None:
        return arrays, record | unchanged(server_round, "the strategy returned no model")
    log(INFO, "Round %d: global model updated from the masked sum of %s", server_round, ", ".join(used))
    return conform(aggregated, spec), record | {"aggregated": True, "reason": ""}
