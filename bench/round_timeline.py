"""Where a deployed round's time goes, hop by hop, read from the logs of a loopback deployment run with Flower's
DEBUG log level (every Flower line then carries its time).

Sources: the ServerApp's streamed log (`flwr run --stream`: round starts, and server_app.rounds.grid_exchange's
"Pushing"/"Pushed"/"Pulled the reply of node N" lines), each site's SuperNode log ("Receiving",
"Runtime.PushMessages", "Sending", "Sent successfully") and gate log (deploy/site/approval_gate.py, the site's
SuperExec, and the ClientApps it starts: "ClientApp started warm" or, started cold, "Start `flwr-clientapp`
process"; "Loading ClientApp"), merged by time, and each site's site.log ("handling a … message"). A SuperNode handles one message at a time, so each site's lines split into one segment
per message.
"""

import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from server_app.rounds.loop import ROUNDS_FINISHED

STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
ROUND = re.compile(r"\[ROUND (\d+)/\d+\]")
PUSHING = re.compile(r"Pushing (\S+) messages to nodes ([\d ]+)")
PUSHED = re.compile(r"Pushed (\S+) messages to nodes ([\d ]+)")
PULLED = re.compile(r"Pulled the reply of node (\d+)")
NODE_ID = re.compile(r"SuperNode ID: (\d+)")
RECEIVING = re.compile(r"Receiving: (\S+) message")

HOPS = (
    ("ServerApp push starts → SuperNode receives (push, SuperNode fetch wait)", "pushing", "receiving"),
    (
        "SuperNode pull, SuperExec poll, ClientApp start (cold: interpreter + flwr import)",
        "receiving",
        "app_start",
    ),
    ("ClientApp pull + FAB install", "app_start", "loading"),
    ("ClientApp import (site_app; cold: torch, MONAI too)", "loading", "handling"),
    ("compute (the site's handler)", "handling", "replied"),
    ("SuperNode reply wait", "replied", "sending"),
    ("SuperNode push (→ SuperLink)", "sending", "sent"),
    ("ServerApp pull wait", "sent", "pulled"),
)
"""(hop, from event, to event): one message's path, in order; together they add up to push → reply pulled. The
ServerApp's push and the SuperNode's fetch overlap (a SuperNode can take a message while the ServerApp still
uploads the copies for other nodes), so they share a hop; PUSH_ITSELF is timed beside the path."""
PUSH_ITSELF = ("(beside the path) ServerApp push of all the phase's messages", "pushing", "pushed")


def _time(line: str) -> float | None:
    match = STAMP.search(line)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _timed_lines(path: Path) -> list[tuple[float, str]]:
    lines = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = ANSI.sub("", raw)
        if (moment := _time(line)) is not None:
            lines.append((moment, line))
    return lines


@dataclass
class SiteMessageTimes:
    """One message's events at one site (epoch seconds)."""

    kind: str
    events: dict[str, float] = field(default_factory=dict)


APP_START = ("Start `flwr-clientapp` process", "ClientApp started warm")
"""A ClientApp's start: Flower's line in a fresh `flwr-clientapp`, the gate's when it forks one warm."""


def site_messages(flower_logs: list[Path], site_log: Path) -> tuple[int | None, list[SiteMessageTimes]]:
    """The SuperNode's node id and its messages in order, each with the site-side events of its path, from the
    site's Flower logs (SuperNode and gate) merged by time."""
    node_id, messages = None, []
    handling = (
        [moment for moment, line in _timed_lines(site_log) if "handling a " in line]
        if site_log.is_file()
        else []
    )
    merged = sorted(
        (item for path in flower_logs if path.is_file() for item in _timed_lines(path)),
        key=lambda item: item[0],
    )
    for moment, line in merged:
        if (match := NODE_ID.search(line)) and node_id is None:
            node_id = int(match.group(1))
        elif match := RECEIVING.search(line):
            messages.append(SiteMessageTimes(match.group(1), {"receiving": moment}))
        elif messages:
            events = messages[-1].events
            for event, texts in (
                ("app_start", APP_START),
                ("loading", ("Loading ClientApp",)),
                ("replied", ("Runtime.PushMessages",)),
                ("sending", ("Sending: ",)),
                ("sent", ("Sent successfully",)),
            ):
                if any(text in line for text in texts) and event not in events:
                    events[event] = moment
                    if event == "loading":
                        events["handling"] = next((t for t in handling if t >= moment - 0.001), moment)
                    break
    return node_id, messages


@dataclass
class Phase:
    """One phase of one round at the ServerApp: its messages' push and each node's reply."""

    round: int
    kind: str
    pushing: float
    pushed: float
    nodes: list[int]
    pulled: dict[int, float] = field(default_factory=dict)


def server_phases(serverapp_log: Path) -> tuple[dict[int, float], list[Phase], float | None]:
    """Round → start time, the phases in order, and the time the rounds finished."""
    starts, phases, current, last = {}, [], -1, None
    for moment, line in _timed_lines(serverapp_log):
        if ROUNDS_FINISHED in line:
            last = moment
        elif match := ROUND.search(line):
            current = int(match.group(1))
            starts[current] = moment
        elif match := PUSHING.search(line):
            nodes = [int(n) for n in match.group(2).split()]
            phases.append(Phase(current, match.group(1), moment, moment, nodes))
        elif (match := PUSHED.search(line)) and phases:
            phases[-1].pushed = moment
        elif (match := PULLED.search(line)) and phases:
            phases[-1].pulled[int(match.group(1))] = moment
    return starts, phases, last


def hop_rows(
    serverapp_log: Path, sites: dict[str, tuple[list[Path], Path]]
) -> tuple[list[list[object]], list[list[object]]]:
    """Per hop (train and evaluate messages of rounds ≥ 1): median and max over sites and rounds, in seconds; and
    per round the coordinator's phases (round start → train push, train push → last train reply, last train reply
    → evaluate push, evaluate push → last evaluate reply, last evaluate reply → next round, the round, and the
    evaluate phase less its slowest site's validation)."""
    starts, phases, last = server_phases(serverapp_log)
    by_node = {}
    for site, (flower_logs, site_log) in sites.items():
        node_id, messages = site_messages(flower_logs, site_log)
        if node_id is not None:
            by_node[node_id] = (site, messages)
    samples: dict[tuple[str, str], list[float]] = {}
    computed: dict[tuple[int, str], list[float]] = {}
    for phase in phases:
        if phase.round < 1 or phase.kind not in ("train", "evaluate"):
            continue
        for node in phase.nodes:
            if node not in by_node or node not in phase.pulled:
                continue
            site_side = next(
                (
                    m
                    for m in by_node[node][1]
                    if m.kind == phase.kind and m.events.get("receiving", 0) >= phase.pushing
                ),
                None,
            )
            if site_side is None:
                continue
            events = {
                **site_side.events,
                "pushing": phase.pushing,
                "pushed": phase.pushed,
                "pulled": phase.pulled[node],
            }
            for hop, start, end in (*HOPS, PUSH_ITSELF):
                if start in events and end in events:
                    samples.setdefault((hop, phase.kind), []).append(events[end] - events[start])
            samples.setdefault(("total: push → reply pulled", phase.kind), []).append(
                events["pulled"] - events["pushing"]
            )
            if "handling" in events and "replied" in events:
                computed.setdefault((phase.round, phase.kind), []).append(
                    events["replied"] - events["handling"]
                )
    hops = [*(hop for hop, _, _ in HOPS), "total: push → reply pulled", PUSH_ITSELF[0]]
    rows = []
    for hop in hops:
        row: list[object] = [hop]
        for kind in ("train", "evaluate"):
            values = samples.get((hop, kind), [])
            row += [statistics.median(values), max(values)] if values else ["–", "–"]
        rows.append(row)
    round_rows = []
    for rnd, start in sorted(starts.items()):
        if rnd < 1:
            continue
        mine = {p.kind: p for p in phases if p.round == rnd}
        train, evaluate = mine.get("train"), mine.get("evaluate")
        if train is None or not train.pulled:
            continue
        following = starts.get(rnd + 1, last)
        if evaluate is None or not evaluate.pulled:  # one message per round: the validation rode on the train
            train_end = max(train.pulled.values())
            round_rows.append(
                [
                    rnd,
                    train.pushing - start,
                    train_end - train.pushing,
                    "–",
                    "–",
                    (following or 0.0) - train_end,
                    (following or 0.0) - start,
                    "–",
                ]
            )
            continue
        evaluate_wall = max(evaluate.pulled.values()) - evaluate.pushing
        round_rows.append(
            [
                rnd,
                train.pushing - start,
                max(train.pulled.values()) - train.pushing,
                evaluate.pushing - max(train.pulled.values()),
                max(evaluate.pulled.values()) - evaluate.pushing,
                (following or 0.0) - max(evaluate.pulled.values()),
                (following or 0.0) - start,
                evaluate_wall - max(computed.get((rnd, "evaluate"), [0.0])),
            ]
        )
    return rows, round_rows


HOP_HEADERS = ["hop", "train median s", "train max s", "evaluate median s", "evaluate max s"]
ROUND_HEADERS = [
    "round",
    "start → train push s",
    "train push → last reply s",
    "last train reply → evaluate push s",
    "evaluate push → last reply s",
    "last evaluate reply → next round s",
    "round s",
    "evaluate phase beyond its slowest compute s",
]
"""With one message per site per round (`round-messages` one) a round has no evaluate phase but the last, whose
evaluate columns are the validate-only message after it; the others show "–". The last column is what one message
per site per round would save (each site validating the model it receives
before training on it): the evaluate phase's wall time less its slowest site's validation, which would still run."""
