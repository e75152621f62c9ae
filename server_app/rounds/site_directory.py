"""Which site is behind which Flower node: asked once per node with the describe query (models.shared.wire).

A site's name is the one the coordinator registered its key under (`flwr supernode register --name`, done by
`oncofed coordinator start` from the kit) when Flower knows one, else the name the site gives (simulation).
The description also carries the site's data overview and its min-report-cases: the usable case count bounds the
`num-examples` the site may claim, and when the site's policy withholds that count (between 1 and its
min-report-cases - 1: site_app.disclosure.policy, R8) the bound is its min-report-cases - 1. Answers are matched to nodes through the message they answer (server_app.rounds.grid_exchange), so a node
the SuperLink reports unavailable is named, not filed under node 1.

A site whose gate refuses the run's app (models/shared/wire.py) never describes itself; its refusal names it, and every
refusal is filed (`on_refusal`) and logged with the site's name and the app's hash.
"""

from collections.abc import Callable, Iterable
from logging import INFO, WARNING

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from models.shared.wire import (
    DESCRIBE_MESSAGE_TYPE,
    DROPPED,
    FAILED,
    SITE_MIN_REPORT_CASES,
    SITE_NAME,
    Overview,
    Record,
    parse_refusal,
)
from server_app.rounds.grid_exchange import exchange
from server_app.rounds.participation import PhaseOutcome, answer_outcome


class SiteDirectory:
    """Maps node ids to site names; nodes that join later are asked when they are first selected."""

    def __init__(self, on_refusal: Callable[[dict], None] | None = None) -> None:
        self._names: dict[int, str] = {}
        self._on_refusal = on_refusal
        self.overviews: dict[str, dict[str, int | float]] = {}
        """site name → the aggregate data overview it sent (case counts, …)."""
        self.min_report_cases: dict[str, int] = {}
        """site name → its min-report-cases, as it described itself."""
        self.refused: set[int] = set()
        """Nodes whose gate refused this run's app when last asked (not approved at the site): no code of the
        app ran there. They stay unknown, so they are asked again the next time they are online."""
        self._refused_names: dict[int, str] = {}

    def note_refusal(self, reply: Message | None, server_round: int | None) -> PhaseOutcome | None:
        """File and log the reply if it is the site gate's refusal of the run's app; None for any other reply."""
        if reply is None or not reply.has_error():
            return None
        refusal = parse_refusal(reply.error.code, reply.error.reason)
        if refusal is None:
            return None
        node = reply.metadata.src_node_id
        if node not in self._names:
            self._refused_names[node] = refusal.site
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
        return PhaseOutcome(FAILED, f"refused this run's app, not approved at the site: {reply.error.reason}")

    def name(self, node_id: int) -> str:
        return self._names.get(node_id) or self._refused_names.get(node_id) or f"node-{node_id}"

    def knows(self, node_id: int) -> bool:
        return node_id in self._names

    @property
    def names(self) -> list[str]:
        return sorted(set(self._names.values()))

    def nodes_of(self, site: str) -> list[int]:
        """Every node id filed under `site` (a site that reconnected has had more than one)."""
        return [node for node, name in {**self._refused_names, **self._names}.items() if name == site]

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
        self.refused -= set(unknown)
        failures: dict[int, PhaseOutcome] = {}
        for node in unknown:
            reply = answers.replies.get(node)
            refused = self.note_refusal(reply, None)
            if refused is not None:
                failures[node] = refused
                continue
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
    def from_state(cls, state: dict, on_refusal: Callable[[dict], None] | None = None) -> "SiteDirectory":
        """A directory that already knows the sites of a checkpoint; nodes are asked again only when new."""
        directory = cls(on_refusal)
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
