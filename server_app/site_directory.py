"""Which site is behind which Flower node: asked once per node with a `query.describe` message.

A site's name is the one the coordinator registered its key under (`flwr supernode register --name`, done by
`oncofed coordinator start` from the kit) when Flower knows one, else the name the site gives (simulation).
The description also carries the site's data overview; its usable case count bounds the `num-examples` the site
may claim. Answers are matched to nodes through the message they answer (server_app.grid_exchange), so a node
the SuperLink reports unavailable is named, not filed under node 1.
"""

from collections.abc import Iterable
from logging import INFO, WARNING

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from server_app.grid_exchange import exchange
from server_app.participation import DROPPED, PhaseOutcome, answer_outcome
from server_app.reply_checks import USABLE_CASES_KEY

DESCRIBE = "query.describe"
SITE_RECORD = "site"
"""Describe reply: ConfigRecord with `site-name` (site_app/app.py)."""


class SiteDirectory:
    """Maps node ids to site names; nodes that join later are asked when they are first selected."""

    def __init__(self) -> None:
        self._names: dict[int, str] = {}
        self.overviews: dict[str, dict[str, int | float]] = {}
        """site name → the aggregate data overview it sent (case counts, …)."""

    def name(self, node_id: int) -> str:
        return self._names.get(node_id, f"node-{node_id}")

    def knows(self, node_id: int) -> bool:
        return node_id in self._names

    @property
    def names(self) -> list[str]:
        return sorted(set(self._names.values()))

    def usable_cases(self, node_id: int) -> int | None:
        """The usable cases the site described (a described site always said; None for an unknown node)."""
        value = self.overviews.get(self.name(node_id), {}).get(USABLE_CASES_KEY)
        return _count(value)

    def describe(self, grid: Grid, node_ids: Iterable[int], timeout_s: float) -> dict[int, PhaseOutcome]:
        """Ask the nodes not yet known who they are; returns the outcome for each node that did not say."""
        online = set(node_ids)
        unknown = sorted(node for node in online if node not in self._names)
        if not unknown:
            return {}
        registered = {node.node_id: node.name for node in grid.get_nodes() if node.name}
        queries = [Message(RecordDict(), dst_node_id=node, message_type=DESCRIBE) for node in unknown]
        answers = exchange(grid, queries, timeout_s)
        failures: dict[int, PhaseOutcome] = {}
        for node in unknown:
            reply = answers.replies.get(node)
            outcome = answer_outcome(reply, timeout_s)
            if outcome is None:
                outcome = _description_problem(reply.content)
            if outcome is not None:
                failures[node] = outcome
                label = registered.get(node, f"node {node}")
                log(WARNING, "Site %s did not describe itself (%s)", label, outcome.text())
                continue
            described = str(reply.content[SITE_RECORD].get("site-name", ""))
            self._learn(node, described, registered.get(node), reply, online)
        return failures

    def _learn(
        self, node: int, described: str, registered: str | None, reply: Message, online: set[int]
    ) -> None:
        if registered and described != registered:
            log(
                WARNING,
                "Node %d says it is %r but its key is registered as %r: filed as %r",
                node,
                described,
                registered,
                registered,
            )
        name = registered or described or f"node-{node}"
        holders = {other for other, known in self._names.items() if known == name}
        if holders & online:
            log(WARNING, "Two nodes call themselves %r; node %d is filed as %s#%d", name, node, name, node)
            name = f"{name}#{node}"
        for other in holders - online:  # the site came back under a new node id (new key, new simulation)
            del self._names[other]
        self._names[node] = name
        self.overviews[name] = {
            k: v for record in reply.content.metric_records.values() for k, v in record.items()
        }
        log(INFO, "Node %d is site %s", node, name)

    def state(self) -> dict:
        """What the round checkpoint keeps: the site map and the overviews."""
        return {"names": {int(k): v for k, v in self._names.items()}, "overviews": dict(self.overviews)}

    @classmethod
    def from_state(cls, state: dict) -> "SiteDirectory":
        """A directory that already knows the sites of a checkpoint; nodes are asked again only when new."""
        directory = cls()
        directory._names = {int(k): str(v) for k, v in state.get("names", {}).items()}
        directory.overviews = {str(k): dict(v) for k, v in state.get("overviews", {}).items()}
        return directory


def _count(value: object) -> int | None:
    return (
        int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else None
    )


def _description_problem(content: RecordDict) -> PhaseOutcome | None:
    """A description names the site and says how many usable cases it has (the bound on its `num-examples`)."""
    if not isinstance(content.get(SITE_RECORD), ConfigRecord):
        return PhaseOutcome(DROPPED, "its description has no site record")
    counts = [record.get(USABLE_CASES_KEY) for record in content.metric_records.values()]
    if not any(_count(value) is not None for value in counts):
        return PhaseOutcome(
            DROPPED, f"its description does not say how many usable cases it has ({USABLE_CASES_KEY})"
        )
    return None
