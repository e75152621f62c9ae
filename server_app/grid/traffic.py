"""Bytes on the wire per site and round, measured on the messages the ServerApp really sends and receives.

`MeteredGrid` wraps the run's Grid: every message pushed (train or evaluate, with its `server-round` in the
config) and every reply pulled is measured with models.transport.message_bytes and filed under its round, its
site (node id) and its direction. Other messages (the `describe` query) are not counted.
"""

from collections import defaultdict
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from models.shared.wire import SERVER_ROUND, Record
from models.transport import message_bytes
from server_app.grid.forwarding import ForwardingGrid

DIRECTIONS = ("train-down", "train-up", "evaluate-down", "evaluate-up")
"""down: coordinator → site; up: site → coordinator."""


class TrafficLedger:
    """(round, node id) → bytes per direction."""

    def __init__(self) -> None:
        self.bytes: dict[tuple[int, int], dict[str, int]] = defaultdict(lambda: dict.fromkeys(DIRECTIONS, 0))

    def add(self, server_round: int, node_id: int, direction: str, n_bytes: int) -> None:
        self.bytes[(server_round, node_id)][direction] += n_bytes

    def site_round_of(self, server_round: int, node_ids: Iterable[int]) -> dict[str, int]:
        """Bytes per direction of all of a site's nodes in a round (a site that reconnected has a new node id)."""
        total = dict.fromkeys(DIRECTIONS, 0)
        for node_id in set(node_ids):
            for direction, n_bytes in self.bytes.get((server_round, node_id), {}).items():
                total[direction] += n_bytes
        return total


def _kind(message_type: str) -> str | None:
    kind = message_type.split(".")[0]
    return kind if kind in ("train", "evaluate") else None


def _round(content: RecordDict) -> int | None:
    config = content.config_records.get(Record.CONFIG)
    value = config.get(SERVER_ROUND) if config is not None else None
    return int(value) if isinstance(value, int) else None


class MeteredGrid(ForwardingGrid):
    """A Grid that forwards everything to `grid` and files the bytes of train/evaluate traffic in `ledger`."""

    def __init__(self, grid: Grid, ledger: TrafficLedger) -> None:
        super().__init__(grid)
        self.ledger = ledger
        self._sent: dict[str, tuple[int, str]] = {}
        """message id → (round, kind), to file the replies pulled later."""

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        tags = [self._file_outgoing(m) for m in messages]
        ids = list(self.grid.push_messages(messages))
        for message_id, tag in zip(ids, tags, strict=False):
            if tag is not None:
                self._sent[message_id] = tag
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.grid.pull_messages(message_ids))
        for reply in replies:
            tag = self._sent.pop(reply.metadata.reply_to_message_id, None)
            if tag is not None:
                self._file_reply(reply, *tag)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        tags = {m.metadata.dst_node_id: self._file_outgoing(m) for m in messages}
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            tag = tags.get(reply.metadata.src_node_id)
            if tag is not None:
                self._file_reply(reply, *tag)
        return replies

    def _file_outgoing(self, message: Message) -> tuple[int, str] | None:
        kind = _kind(message.metadata.message_type)
        server_round = _round(message.content) if kind else None
        if kind is None or server_round is None:
            return None
        self.ledger.add(server_round, message.metadata.dst_node_id, f"{kind}-down", message_bytes(message))
        return server_round, kind

    def _file_reply(self, reply: Message, server_round: int, kind: str) -> None:
        self.ledger.add(server_round, reply.metadata.src_node_id, f"{kind}-up", message_bytes(reply))
