"""A message a site sent, as the coordinator (curious or not) reads it off the wire: deserialized, then with its
packed weights taken apart by the production code (models.packed_weights), so every array is seen by name."""

from flwr.app import Message
from flwr.common.serde import message_from_proto
from flwr.proto.message_pb2 import Message as ProtoMessage

from models.packed_weights import unpack_content


def read_sent(raw: bytes) -> Message:
    message = message_from_proto(ProtoMessage.FromString(raw))
    if not message.has_error():
        unpack_content(message.content)
    return message
