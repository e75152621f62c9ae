"""A whole federated run in this process: the coordinator's ServerApp `main` and every site's ClientApp, unchanged,
joined by a Grid that hands each message straight to the addressed site's ClientApp (no Flower processes).

Used by the quality benchmark, where many configurations must run on one machine: the strategy, the sites'
training and validation, the run folder (metrics.jsonl with bytes and ε, best model, report) are the real ones;
only Flower's transport between processes is left out. Bytes are still measured on the messages themselves
(server_app.grid.traffic), which is what Flower would move.
"""

from collections.abc import Callable, Iterable
from pathlib import Path
from uuid import uuid4

from common import coordinator_identity
from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from server_app.app import main as server_main
from site_app.app import app as site_app


class InProcessGrid(Grid):
    """Delivers each message to `site_app` with the context of its destination node; replies come back at once."""

    def __init__(self, contexts: dict[int, Context]) -> None:
        self.contexts = contexts
        self._run = Run.create_empty(run_id=1)  # no FAB: the run folder's app.json records empty strings
        self._replies: dict[str, Message] = {}

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(
            content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl
        )

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            # As Flower's InMemoryGrid does: the id the reply's reply_to_message_id names (server_app.rounds.grid_exchange
            # matches replies to sites through it)
            message.metadata.__dict__["_message_id"] = str(uuid4())
            reply = self._deliver(message)
            self._replies[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return [self._deliver(message) for message in messages]

    def _deliver(self, message: Message) -> Message:
        return site_app(message=message, context=self.contexts[message.metadata.dst_node_id])


def run_federation(
    data: Path,
    run_dir: Path,
    work: Path,
    run_config: dict[str, object],
    n_sites: int,
    grid: Callable[[dict[int, Context]], InProcessGrid] = InProcessGrid,
) -> Path:
    """Run the ServerApp with `run_config` (+ run folder and the simulated sites' folders); returns the run folder.

    Sites are the folders of `data` in order (partition ids), their work folders under `work` (shared between runs,
    so the preprocessing cache is built once; each run keeps its site state under <work>/<site>/runs/<run key>).
    `grid`: makes the InProcessGrid (subclass) that carries the messages from the sites' contexts
    (bench/poisoning_member.py: one that crafts a site's replies)."""
    config = {
        **run_config,
        "run-dir": str(run_dir),
        "sim-data": str(data),
        "sim-work": str(work),
        "min-sites": n_sites,
    }
    contexts = {
        101 + partition: Context(
            run_id=1,
            node_id=101 + partition,
            node_config={"partition-id": partition, "num-partitions": n_sites},
            state=RecordDict(),
            run_config=config,
        )
        for partition in range(n_sites)
    }
    server = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=config)
    with coordinator_identity():
        server_main(grid(contexts), server)
    return run_dir
