"""Which site is behind which Flower node: asked once per node with the describe query (models.wire).

A site's name is the one the coordinator registered its key under (`flwr supernode register --name`, done by
`oncofed coordinator start` from the kit) when Flower knows one, else the name the site gives (simulation).
The description also carries the site's data overview and its min-report-cases: the usable case count bounds the
`num-examples` the site may claim, and when the site's policy withholds that count (between 1 and its
min-report-cases - 1: site_app.disclosure_policy, R8) the bound is its min-report-cases - 1. Answers are matched to nodes through the message they answer (server_app.grid_exchange), so a node
the SuperLink reports unavailable is named, not filed under node 1.
"""

from collections.abc import Iterable
from logging import INFO, WARNING

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from models.wire import DESCRIBE_MESSAGE_TYPE, DROPPED, SITE_MIN_REPORT_CASES, SITE_NAME, Overview, Record
from server_app.grid_exchange import exchange
from server_app.participation import PhaseOutcome, answer_outcome


class SiteDirectory:
    """Maps node ids to site names; nodes that join later are asked when they are first selected."""

    def __init__(self) -> None:
        self._names: dict[int, str] = {}
        self.overviews: dict[str, dict[str, int | float]] = {}
        """site name → the aggregate data overview it sent (case counts, …)."""
        self.min_report_cases: dict[str, int] = {}
        """site name → its min-report-cases, as it described itself."""

    def name(self, node_id: int) -> str:
        return self._names.get(node_id, f"node-{node_id}")

    def knows(self, node_id: int) -> bool:
        return node_id in self._names

    @property
    def names(self) -> list[str]:
        return sorted(set(self._names.values()))

    def usable_cases(self, node_id: int) -> int | None:
        """The most cases the site can have: the usable cases it described, or, when its policy withheld that
        count, its min-report-cases - 1; None for a node that did not describe itself."""
        name = self.name(node_id)
        count = _count(self.overviews.get(name, {}).get(Overview.N_CASES_USABLE))
        if count is None and name in self.min_report_cases:
            return self.min_report_cases[name] - 1
        return count

    def describe(self, grid: Grid, node_ids: Iterable[int], timeout_s: float) -> dict[int, PhaseOutcome]:
        """Ask the nodes not yet known who they are; returns the outcome for each node that did not say."""
        online = set(node_ids)
        unknown = sorted(node for node in online if node not in self._names)
        if not unknown:
            return {}
        registered = {node.node_id: node.name for node in grid.get_nodes() if node.name}
        queries = [
            Message(RecordDict(), dst_node_id=node, message_type=DESCRIBE_MESSAGE_TYPE) for node in unknown
        ]
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
            described, _ = site_description(reply.content) or ("", {})
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
        self.overviews[name] = (site_description(reply.content) or ("", {}))[1]
        minimum = _count(reply.content[Record.SITE].get(SITE_MIN_REPORT_CASES))
        if minimum:
            self.min_report_cases[name] = minimum
        log(INFO, "Node %d is site %s", node, name)

    def state(self) -> dict:
        """What the round checkpoint keeps: the site map and the overviews."""
        return {
            "names": {int(k): v for k, v in self._names.items()},
            "overviews": dict(self.overviews),
            "min_report_cases": dict(self.min_report_cases),
        }

    @classmethod
    def from_state(cls, state: dict) -> "SiteDirectory":
        """A directory that already knows the sites of a checkpoint; nodes are asked again only when new."""
        directory = cls()
        directory._names = {int(k): str(v) for k, v in state.get("names", {}).items()}
        directory.overviews = {str(k): dict(v) for k, v in state.get("overviews", {}).items()}
        directory.min_report_cases = {str(k): int(v) for k, v in state.get("min_report_cases", {}).items()}
        return directory


def site_description(content: RecordDict) -> tuple[str, dict[str, int | float]] | None:
    """The site's name and data overview from a describe reply's content; None when it holds no name."""
    site = content.config_records.get(Record.SITE)
    if site is None or not site.get(SITE_NAME):
        return None
    overview = content.metric_records.get(Record.OVERVIEW)
    return str(site[SITE_NAME]), dict(overview) if overview is not None else {}


def _count(value: object) -> int | None:
    return (
        int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else None
    )


def _description_problem(content: RecordDict) -> PhaseOutcome | None:
    """A description names the site and bounds its cases: the usable count in its OVERVIEW, or, where the site's
    policy withholds that count, its min-report-cases in its SITE record (the bound on its `num-examples`)."""
    site = content.get(Record.SITE)
    if not isinstance(site, ConfigRecord):
        return PhaseOutcome(DROPPED, f"its description has no {Record.SITE!r} record")
    overview = content.get(Record.OVERVIEW)
    count = overview.get(Overview.N_CASES_USABLE) if isinstance(overview, MetricRecord) else None
    minimum = _count(site.get(SITE_MIN_REPORT_CASES))
    if _count(count) is None and not minimum:
        return PhaseOutcome(
            DROPPED,
            f"its description bounds its cases by neither `{Overview.N_CASES_USABLE}` nor"
            f" `{SITE_MIN_REPORT_CASES}`",
        )
    return None
