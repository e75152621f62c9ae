"""The site's end of packed weights (models.packed_weights): a ClientApp mod that unpacks the instruction before
any handler or other mod reads it and packs the reply after all of them, so that local DP, masking and the
disclosure checks see arrays by name and only the packed form leaves."""

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable

from models.packed_weights import pack_content, unpack_content


def packed_weights(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Unpack `msg` (a malformed packed record raises PackingError), handle it, pack the reply."""
    unpack_content(msg.content, f"{msg.metadata.message_type} instruction")
    reply = call_next(msg, context)
    if not reply.has_error():
        reply.content = pack_content(reply.content)
    return reply
