"""Which site is behind which Flower node: asked once per node with the describe query (models.wire)."""

from collections.abc import Iterable
from logging import INFO, WARNING

from flwr.app import Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from models.wire import DESCRIBE_MESSAGE_TYPE, SITE_NAME, Record


class SiteDirectory:
    """Maps node ids to site names; nodes that join later are asked when they are first sampled."""

    def __init__(self, timeout_s: float = 300.0) -> None:
        self._names: dict[int, str] = {}
        self._timeout_s = timeout_s
        self.overviews: dict[str, dict[str, int | float]] = {}
        """site name → the aggregate data overview it sent (case counts, …)."""

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
