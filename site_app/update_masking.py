"""The site's side of secure aggregation (SecAgg+): a ClientApp mod that masks the site's training update.

With the run setting `secure-aggregation` the coordinator's train phase has four stages
(server_app.rounds.secure_aggregation), each a train message carrying Flower's SecAgg+ record
(models.shared.wire.Record.SECAGG). This mod answers them with Flower's own SecAgg+ stage logic
(flwr.client.mod.secure_aggregation.secaggplus_mod: its state, stage and config checks, key setup, Shamir
shares, masking and unmasking) and Flower's crypto and quantization; only the collect stage differs from
Flower's mod, because our train reply is the Message API's (ARRAYS + METRICS), not a legacy FitRes:

  setup            two key pairs; the public keys go to the coordinator
  share-keys       the seed of the site's own mask and its first private key, Shamir-shared among its
                   neighbours, each share encrypted for its holder (the coordinator only forwards them)
  collect          the site trains (the ClientApp's train handler, unchanged), then masks its update (its
                   weights minus the global weights it received), which never leaves in plaintext:
                     1. clipped to the instruction's update-norm-bound (float arrays, as the coordinator clips
                        in plaintext mode: Flower's clip_inputs_inplace);
                     2. weighed by min(its training cases, the instruction's max-weight), the capped weight the
                        coordinator computed from the described case counts (Flower's weight factor, summed with
                        the vector so that the coordinator divides by the sum of the weights);
                     3. quantized (stochastic rounding to update-norm-bound / 2^21) and masked (its own mask and
                        one pairwise mask per neighbour, which cancel in the sum).
                   The reply holds the masked vector and the plaintext METRICS (loss, num-examples: the count
                   the coordinator checks); a round the site's policy declined or refused passes through as it is.
  unmask           the shares the coordinator asks for: of its own mask's seed for each neighbour that sent a
                   masked vector, of the private key for each that dropped out after sharing its keys, never
                   both for one site (Flower's stage logic).
A message without the SecAgg+ record (any plaintext round, describe, evaluate) passes through untouched.
"""

from typing import cast

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.client.mod.secure_aggregation.secaggplus_mod import (
    SecAggPlusState,
    _collect_masked_vectors,
    _setup,
    _share_keys,
    _unmask,
    check_configs,
    check_stage,
)
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_STATE, Key, Stage
from flwr.supercore.differential_privacy import clip_inputs_inplace, get_norm

from models.shared.wire import NUM_EXAMPLES, Record, SecureUpdate
from models.transport import decode


def mask_update(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Answer a SecAgg+ stage (its state kept in the node's context between stages); pass anything else on."""
    if msg.metadata.message_type != MessageType.TRAIN or Record.SECAGG not in msg.content.config_records:
        return call_next(msg, context)
    state = SecAggPlusState(**context.state.config_records.get(RECORD_KEY_STATE, ConfigRecord()))
    configs = ConfigRecord(dict(msg.content.config_records[Record.SECAGG]))
    check_stage(state.current_stage, configs)
    state.current_stage = cast(str, configs.pop(Key.STAGE))
    check_configs(state.current_stage, configs)
    content = RecordDict()
    if state.current_stage == Stage.SETUP:
        state.nid = msg.metadata.dst_node_id
        result = _setup(state, configs)
    elif state.current_stage == Stage.SHARE_KEYS:
        result = _share_keys(state, configs)
    elif state.current_stage == Stage.COLLECT_MASKED_VECTORS:
        reply = call_next(msg, context)
        if reply.has_error() or Record.ARRAYS not in reply.content.array_records:
            _save(context, state)
            return reply  # an error, or a round the site's policy declined or refused: no vector at all
        weight, update = prepared_update(msg.content, reply.content)
        result = _collect_masked_vectors(state, configs, weight, ndarrays_to_parameters(update))
        content[Record.METRICS] = reply.content[Record.METRICS]
    else:
        result = _unmask(state, configs)
    _save(context, state)
    content[Record.SECAGG] = ConfigRecord(result, False)
    return Message(content, reply_to=msg)


def prepared_update(instruction: RecordDict, reply: RecordDict) -> tuple[float, list[np.ndarray]]:
    """The site's weight and its update, clipped, in the order of the instruction's arrays (the global model's):
    what the collect stage masks."""
    secure = instruction.config_records[Record.SECURE]
    sent, trained = decode(instruction[Record.ARRAYS]), decode(reply[Record.ARRAYS])
    if list(trained.keys()) != list(sent.keys()):
        raise ValueError("the trained weights do not hold the global model's arrays in its order")
    update = [
        np.asarray(trained[name].numpy(), dtype=np.float64) - np.asarray(sent[name].numpy(), dtype=np.float64)
        for name in sent
    ]
    floats = [np.dtype(sent[name].dtype).kind == "f" for name in sent]
    clip_update(
        [array for array, is_float in zip(update, floats, strict=True) if is_float],
        float(secure[SecureUpdate.NORM_BOUND]),
    )
    weight = min(float(reply[Record.METRICS][NUM_EXAMPLES]), float(secure[SecureUpdate.MAX_WEIGHT]))
    return weight, update


def clip_update(floats: list[np.ndarray], bound: float) -> float:
    """Scale the arrays (the update of the model's float arrays; integer counters are left as they are, as the
    coordinator's bound does) in place so that their L2 norm is at most `bound`; returns the norm before."""
    norm = float(get_norm(floats)) if floats else 0.0
    if not np.isfinite(norm):
        raise ValueError("the trained update is not finite")
    if norm > bound > 0:
        clip_inputs_inplace(floats, bound)
    return norm


def _save(context: Context, state: SecAggPlusState) -> None:
    context.state.config_records[RECORD_KEY_STATE] = ConfigRecord(state.to_dict())
