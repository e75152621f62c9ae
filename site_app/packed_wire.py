"""The site's end of packed weights (models.packed_weights): a ClientApp mod that unpacks the instruction before
any handler or other mod reads it and packs the reply after all of them, so that local DP, masking and the
disclosure checks see arrays by name and only the packed form leaves.

The reply is packed unless the instruction itself brought its weights unpacked (a caller that does not pack,
such as a test or a benchmark driving the ClientApp in its own process, reads the reply as it wrote the
instruction); the coordinator always packs (server_app/grid/packed.py)."""

from flwr.app import Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from models.packed_weights import layout_key, pack_content, unpack_content


def sent_unpacked(content: RecordDict) -> bool:
    """Whether `content` carries an ArrayRecord of two or more arrays that is not packed."""
    return any(
        len(record) >= 2 and layout_key(key) not in content.config_records
        for key, record in content.array_records.items()
    )


def packed_weights(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Unpack `msg` (a malformed packed record raises PackingError), handle it, pack the reply."""
    pack_reply = not sent_unpacked(msg.content)
    unpack_content(msg.content, f"{msg.metadata.message_type} instruction")
    reply = call_next(msg, context)
    if pack_reply and not reply.has_error():
        reply.content = pack_content(reply.content)
    return reply
