"""Which site is behind which Flower node, and what each site said about its data.

A node's site name is the name the coordinator registered the node's key under: Flower's node table, which the
ServerApp reads with `grid.get_nodes()` (NodeInfo.name). Only the coordinator writes it, through the Control API
on its own host (`oncofed coordinator start` registers each kit site's key under the site's name:
deploy.coordinator.site_registry); under SuperNode authentication a SuperNode can neither register nor name
itself. Nothing a site sends names it: a describe answer, an error reply or a refusal whose text claims another
site is filed under the node's registered name, and the claim is logged. Only a node Flower has no name for is
named by its describe answer: the nodes of `oncofed simulate`, whose ClientApp takes its name from the
simulation's own partition → site-folder map (site_app.settings.identity) and whose node ids are drawn at
random when the simulation starts, so no launcher can hand the coordinator a map beforehand.

Each node is asked once with the describe query (models.shared.wire) for its data overview and min-report-cases:
the usable case count bounds the `num-examples` the site may claim, and when the site's policy withholds that
count (between 1 and its min-report-cases - 1: site_app.disclosure.policy, R8) the bound is its
min-report-cases - 1. The bound is fixed for the run at the site's first description (a site that reconnects
and describes more cases keeps its first count) and is at most the coordinator's `max-cases` for the site (run
config, `max_cases`): what a site may claim is what it first said, never more than the coordinator allows, and a
train reply claiming more is dropped by the reply checks. Replies are matched to nodes through the message they answer
(server_app.rounds.grid_exchange), so a node the SuperLink reports unavailable is named, not filed under node 1.

A site whose gate refuses the run's app (models.shared.wire.APP_NOT_APPROVED_CODE, in any phase) is filed under its
node's name with the hash of the app the coordinator started the run with (`on_refusal`: refusals.jsonl) and logged.
"""

from collections.abc import Callable, Iterable
from logging import INFO, WARNING

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid

from models.shared.wire import (
    DESCRIBE_MESSAGE_TYPE,
    SITE_MIN_REPORT_CASES,
    SITE_NAME,
    SITE_SHARES_LOCAL_MODEL,
    Overview,
    Record,
    Status,
    is_app_refusal,
)
from server_app.rounds.grid_exchange import exchange
from server_app.rounds.participation import PhaseOutcome, answer_outcome


class SiteDirectory:
    """Maps node ids to site names; nodes that join later are asked when they are first selected."""

    def __init__(self, on_refusal: Callable[[dict], None] | None = None, app_sha256: str = "") -> None:
        self._names: dict[int, str] = {}
        """node → the site it was filed under when it described itself."""
        self._registered: dict[int, str] = {}
        """node → the name its key is registered under (Flower's node table), as last listed."""
        self._on_refusal = on_refusal
        self.app_sha256 = app_sha256
        """The SHA-256 of the app (FAB) the run was started with: what a refusing site refused."""
        self.overviews: dict[str, dict[str, int | float]] = {}
        """site name → the aggregate data overview it sent (case counts, …)."""
        self.min_report_cases: dict[str, int] = {}
        """site name → its min-report-cases, as it described itself."""
        self.max_cases: dict[str, int] = {}
        """site name → the most cases it may weigh with (run config `max-cases`); a site not named: no bound
        beyond its first description."""
        self.shares_local_model: set[str] = set()
        """Sites whose describe reply said they consent to share their local-only model (the cross-site matrix);
        the site's own handler checks its consent again."""
        self.refused: set[int] = set()
        """Nodes whose gate refused this run's app when last asked (not approved at the site): no code of the
        app ran there. They are unknown (forgotten when they refuse later), so they are asked again the next time
        they are online."""

    def note_nodes(self, nodes: Iterable[NodeInfo]) -> None:
        """Learn the name each listed node's key is registered under (empty in a simulation)."""
        self._registered.update({node.node_id: node.name for node in nodes if node.name})

    def note_refusal(self, node: int, reply: Message | None, server_round: int | None) -> PhaseOutcome | None:
        """File and log `node`'s reply if it is its gate's refusal of the run's app (by the Error's code); None for
        any other reply. The site is the node's; the reason's text is kept for people and decides nothing."""
        if reply is None or not reply.has_error() or not is_app_refusal(reply.error.code):
            return None
        site, kind, reason = self.name(node), reply.metadata.message_type, reply.error.reason
        self.refused.add(node)
        self._names.pop(node, None)  # asked again when next online: a run every online site refuses stops
        log(WARNING, "Site %s refused the app (round %s, %s): %s", site, server_round, kind, reason)
        if self._on_refusal is not None:
            self._on_refusal(
                {
                    "round": server_round,
                    "message_type": kind,
                    "site": site,
                    "node_id": node,
                    "fab_sha256": self.app_sha256,
                    "reason": reason,
                }
            )
        return PhaseOutcome(Status.FAILED, f"refused this run's app, not approved at the site: {reason}")

    def name(self, node_id: int) -> str:
        return self._names.get(node_id) or self._registered.get(node_id) or f"node-{node_id}"

    def knows(self, node_id: int) -> bool:
        return node_id in self._names

    @property
    def names(self) -> list[str]:
        return sorted(set(self._names.values()))

    def nodes_of(self, site: str) -> list[int]:
        """Every node id filed under `site` (a site that reconnected has had more than one)."""
        return [node for node in {**self._registered, **self._names} if self.name(node) == site]

    def usable_cases(self, node_id: int) -> int | None:
        """The most cases the site can have: the usable cases it described, or, when its policy withheld that
        count, its min-report-cases - 1; None for a node that did not describe itself."""
        name = self.name(node_id)
        count = _count(self.overviews.get(name, {}).get(Overview.N_CASES_USABLE))
        if count is None and name in self.min_report_cases:
            count = self.min_report_cases[name] - 1
        if name in self.max_cases:
            return self.max_cases[name] if count is None else min(count, self.max_cases[name])
        return count

    def describe(self, grid: Grid, node_ids: Iterable[int], timeout_s: float) -> dict[int, PhaseOutcome]:
        """Ask the nodes not yet known who they are; returns the outcome for each node that did not say."""
        online = set(node_ids)
        self.note_nodes(grid.get_nodes())
        unknown = sorted(node for node in online if node not in self._names)
        if not unknown:
            return {}
        queries = [
            Message(RecordDict(), dst_node_id=node, message_type=DESCRIBE_MESSAGE_TYPE) for node in unknown
        ]
        answers = exchange(grid, queries, timeout_s)
        self.refused -= set(unknown)
        failures: dict[int, PhaseOutcome] = {}
        for node in unknown:
            reply = answers.replies.get(node)
            refused = self.note_refusal(node, reply, None)
            if refused is not None:
                failures[node] = refused
                continue
            outcome = answer_outcome(reply, timeout_s) or _description_problem(reply.content)
            if outcome is not None:
                failures[node] = outcome
                log(WARNING, "Site %s did not describe itself (%s)", self.name(node), outcome.text())
                continue
            self._learn(node, reply.content, online)
        return failures

    def _learn(self, node: int, content: RecordDict, online: set[int]) -> None:
        claimed = str(content[Record.SITE].get(SITE_NAME) or "")
        registered = self._registered.get(node)
        if registered and claimed != registered:
            log(
                WARNING,
                "Node %d says it is %r but its key is registered as %r: filed as %r",
                node,
                claimed,
                registered,
                registered,
            )
        name = registered or claimed or f"node-{node}"
        holders = {other for other, known in self._names.items() if known == name}
        if holders & online:
            log(WARNING, "Two nodes call themselves %r; node %d is filed as %s#%d", name, node, name, node)
            name = f"{name}#{node}"
        for other in holders - online:  # the site came back under a new node id (new key, new simulation)
            del self._names[other]
        self._names[node] = name
        overview = content.metric_records.get(Record.OVERVIEW)
        described = dict(overview) if overview is not None else {}
        first = _count(self.overviews.get(name, {}).get(Overview.N_CASES_USABLE))
        claimed = _count(described.get(Overview.N_CASES_USABLE))
        if first is not None and (claimed is None or claimed > first):  # the first description's count stays
            log(
                WARNING,
                "Site %s now describes %s usable cases; it stays bounded by its first %d",
                name,
                claimed,
                first,
            )
            described[Overview.N_CASES_USABLE] = first
        self.overviews[name] = described
        minimum = _count(content[Record.SITE].get(SITE_MIN_REPORT_CASES))
        if minimum and not (name in self.min_report_cases and minimum > self.min_report_cases[name]):
            self.min_report_cases[name] = minimum
        if content[Record.SITE].get(SITE_SHARES_LOCAL_MODEL) is True:
            self.shares_local_model.add(name)
        else:
            self.shares_local_model.discard(name)
        log(INFO, "Node %d is site %s", node, name)

    def state(self) -> dict:
        """What the round checkpoint keeps: the site map and the overviews."""
        return {
            "names": {int(k): v for k, v in self._names.items()},
            "overviews": dict(self.overviews),
            "min_report_cases": dict(self.min_report_cases),
            "shares_local_model": sorted(self.shares_local_model),
        }

    @classmethod
    def from_state(
        cls, state: dict, on_refusal: Callable[[dict], None] | None = None, app_sha256: str = ""
    ) -> "SiteDirectory":
        """A directory that already knows the sites of a checkpoint; nodes are asked again only when new."""
        directory = cls(on_refusal, app_sha256)
        directory._names = {int(k): str(v) for k, v in state.get("names", {}).items()}
        directory.overviews = {str(k): dict(v) for k, v in state.get("overviews", {}).items()}
        directory.min_report_cases = {str(k): int(v) for k, v in state.get("min_report_cases", {}).items()}
        directory.shares_local_model = {str(name) for name in state.get("shares_local_model", [])}
        return directory


def site_description(content: RecordDict) -> tuple[str, dict[str, int | float]] | None:
    """The name a site calls itself and its data overview, from a describe reply's content; None when it holds no
    name. The coordinator files a deployed site under its registered name whatever this says (SiteDirectory)."""
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
    """A description bounds the site's cases: the usable count in its OVERVIEW, or, where the site's policy
    withholds that count, its min-report-cases in its SITE record (the bound on its `num-examples`)."""
    site = content.get(Record.SITE)
    if not isinstance(site, ConfigRecord):
        return PhaseOutcome(Status.DROPPED, f"its description has no {Record.SITE!r} record")
    overview = content.get(Record.OVERVIEW)
    count = overview.get(Overview.N_CASES_USABLE) if isinstance(overview, MetricRecord) else None
    minimum = _count(site.get(SITE_MIN_REPORT_CASES))
    if _count(count) is None and not minimum:
        return PhaseOutcome(
            Status.DROPPED,
            f"its description bounds its cases by neither `{Overview.N_CASES_USABLE}` nor"
            f" `{SITE_MIN_REPORT_CASES}`",
        )
    return None
