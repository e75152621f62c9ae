"""Which site is behind which Flower node: asked once per node with the describe query (models.wire).

A site whose gate refuses the run's app (models/wire.py) never describes itself; its refusal names it, and every
refusal is filed (`on_refusal`) and logged with the site's name and the app's hash.
"""

from collections.abc import Callable, Iterable
from logging import INFO, WARNING

from flwr.app import Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from models.wire import DESCRIBE_MESSAGE_TYPE, SITE_NAME, Record, parse_refusal


class SiteDirectory:
    """Maps node ids to site names; nodes that join later are asked when they are first sampled."""

    def __init__(self, timeout_s: float = 300.0, on_refusal: Callable[[dict], None] | None = None) -> None:
        self._names: dict[int, str] = {}
        self._timeout_s = timeout_s
        self._on_refusal = on_refusal
        self.overviews: dict[str, dict[str, int | float]] = {}
        """site name → the aggregate data overview it sent (case counts, …)."""
        self.refused: set[int] = set()
        """Nodes that refused this run's app."""

    def note_refusal(self, reply: Message, server_round: int | None) -> bool:
        """File and log the reply if it is a refusal of the run's app; False for any other reply."""
        if not reply.has_error():
            return False
        refusal = parse_refusal(reply.error.code, reply.error.reason)
        if refusal is None:
            return False
        node = reply.metadata.src_node_id
        if node not in self._names and refusal.site not in self._names.values():
            self._names[node] = refusal.site
        self.refused.add(node)
        log(
            WARNING,
            "Site %s refused the app (round %s, %s): %s",
            self.name(node),
            server_round,
            reply.metadata.message_type,
            reply.error.reason,
        )
        if self._on_refusal is not None:
            self._on_refusal(
                {
                    "round": server_round,
                    "message_type": reply.metadata.message_type,
                    "site": self.name(node),
                    "node_id": node,
                    "fab_sha256": refusal.fab_hash,
                    "reason": reply.error.reason,
                }
            )
        return True

    def name(self, node_id: int) -> str:
        return self._names.get(node_id, f"node-{node_id}")

    def learn(self, grid: Grid, node_ids: Iterable[int]) -> None:
        unknown = [node for node in node_ids if node not in self._names]
        if not unknown:
            return
        queries = [
            Message(RecordDict(), dst_node_id=node, message_type=DESCRIBE_MESSAGE_TYPE) for node in unknown
        ]
        for reply in grid.send_and_receive(queries, timeout=self._timeout_s):
            node = reply.metadata.src_node_id
            if self.note_refusal(reply, None):
                continue
            description = None if reply.has_error() else site_description(reply.content)
            if description is None:
                log(WARNING, "Node %d did not describe itself; its results are filed as node-%d", node, node)
                continue
            name, overview = description
            if name in self._names.values():
                log(
                    WARNING, "Two nodes call themselves %r; node %d is filed as %s#%d", name, node, name, node
                )
                name = f"{name}#{node}"
            self._names[node] = name
            self.overviews[name] = overview
            log(INFO, "Node %d is site %s", node, name)


def site_description(content: RecordDict) -> tuple[str, dict[str, int | float]] | None:
    """The site's name and data overview from a describe reply's content; None when it holds no name."""
    site = content.config_records.get(Record.SITE)
    if site is None or not site.get(SITE_NAME):
        return None
    overview = content.metric_records.get(Record.OVERVIEW)
    return str(site[SITE_NAME]), dict(overview) if overview is not None else {}
