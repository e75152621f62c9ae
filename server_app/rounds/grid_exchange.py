"""Sending a phase's messages and collecting each site's answer by a deadline, knowing whose answer it is.

Flower's `send_and_receive` returns replies without saying which sent message each answers, and the SuperLink's
"node unavailable" replies come from node 1 (the SuperLink itself). Here every reply is matched to the node it is
for through the message it answers (`reply_to_message_id` → that message's `dst_node_id`), and kept only when its
source node is that node or the SuperLink (the SuperLink stores no other: a node answers only what was sent to
it), so whose reply it is never depends on its content. The nodes that did not answer by the deadline are
returned too. Each message's TTL is the phase deadline: a message no site took in time expires at the SuperLink
instead of starting stale work when the site comes back.
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from logging import DEBUG

from flwr.app import Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.logger import log
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid

from server_app.grid.forwarding import ForwardingGrid

POLL_S = 0.25
"""Seconds between two pulls of a phase's replies: one loopback request to the SuperLink (Flower's own
`send_and_receive` waits 3 s between pulls), so a reply waits at most this long once the SuperLink has it."""


@dataclass(frozen=True)
class Exchange:
    """One phase's answers: node → its reply (content, its own error, or the SuperLink's error for it)."""

    replies: dict[int, Message]
    unanswered: tuple[int, ...]
    """Nodes with no reply at all by the deadline."""


def exchange(
    grid: Grid,
    messages: Iterable[Message],
    timeout_s: float,
    *,
    poll_s: float = POLL_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Exchange:
    """Push `messages` and pull replies until each node answered or `timeout_s` passed."""
    messages = list(messages)
    if not messages:
        return Exchange({}, ())
    for message in messages:
        message.metadata.ttl = float(timeout_s)
    deadline = clock() + timeout_s
    kind, nodes = messages[0].metadata.message_type, _nodes(messages)
    log(DEBUG, "Pushing %s messages to nodes %s", kind, nodes)
    grid.push_messages(messages)
    log(DEBUG, "Pushed %s messages to nodes %s", kind, nodes)
    # Both grids set message_id on the objects they push (HttpGrid: the content hash, InMemoryGrid: a uuid).
    pending = {message.metadata.message_id: message.metadata.dst_node_id for message in messages}
    replies: dict[int, Message] = {}
    while True:
        for reply in grid.pull_messages(list(pending)):
            node = pending.get(reply.metadata.reply_to_message_id)
            if node is not None and reply.metadata.src_node_id in (node, SUPERLINK_NODE_ID):
                del pending[reply.metadata.reply_to_message_id]
                replies[node] = reply
                log(DEBUG, "Pulled the reply of node %d", node)
        left = deadline - clock()
        if not pending or left <= 0:
            return Exchange(replies, tuple(sorted(pending.values())))
        sleep(min(poll_s, left))


def _nodes(messages: list[Message]) -> str:
    return " ".join(str(message.metadata.dst_node_id) for message in messages)


class SelectedNodes(ForwardingGrid):
    """The grid as a strategy sees it for one phase: only the nodes the coordinator selected.

    Flower's sampling (strategy_utils.sample_nodes) waits, with no deadline, until its minimum number of nodes is
    online; given this view and a minimum of 1 it returns at once with exactly the selected nodes. Quorum and
    deadlines are the coordinator's (server_app.rounds.loop), not the sampler's.
    """

    def __init__(self, grid: Grid, node_ids: Iterable[int]) -> None:
        super().__init__(grid)
        self._node_ids = list(node_ids)

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._node_ids)

    def get_nodes(self) -> Iterable[NodeInfo]:
        return [node for node in self.grid.get_nodes() if node.node_id in self._node_ids]
