"""The coordinator's grid with weights packed on the wire (models.packed_weights).

`PackedGrid` wraps the run's Grid: every message pushed leaves with its ArrayRecords packed, every reply pulled
is unpacked before the round loop, the checks or a strategy reads it. A reply whose packed record does not
unpack is handed on as it came, with a warning naming its node: the reply checks then refuse its arrays
(server_app/rounds/reply_checks.py), as they refuse any other malformed reply.
"""

from collections.abc import Iterable
from logging import WARNING

from flwr.app import Message
from flwr.common.logger import log

from models.packed_weights import PackingError, pack_messages, unpack_content
from server_app.grid.forwarding import ForwardingGrid


def unpacked(replies: Iterable[Message]) -> list[Message]:
    """The replies with their weights unpacked (in place); one that does not unpack is kept as it came."""
    replies = list(replies)
    for reply in replies:
        if reply.has_error():
            continue
        try:
            unpack_content(reply.content, f"reply of node {reply.metadata.src_node_id}")
        except PackingError as error:
            log(WARNING, "%s; left as it came", error)
    return replies


class PackedGrid(ForwardingGrid):
    """A Grid that forwards everything to `grid`, packing what it pushes and unpacking what it pulls."""

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(pack_messages(messages))

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return unpacked(self.grid.pull_messages(message_ids))

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return unpacked(self.grid.send_and_receive(pack_messages(messages), timeout=timeout))
