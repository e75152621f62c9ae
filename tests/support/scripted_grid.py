"""A SuperLink stand-in for fast tests of the coordinator's loop: real Flower Messages, sites as small scripts.

It behaves like the SuperLink where the loop depends on it: `get_nodes` lists only online nodes (with the name
their key was registered under), `push_messages` gives each message an id, a message to an offline node is
answered by Flower's own "node unavailable" error reply (from node 1, made by the SuperLink's code), and replies
are matched to messages only through `reply_to_message_id`. The real thing is exercised with real processes in
tests/integration (test_federation_resilience.py).

Weights travel packed as they do between the coordinator and a real site (models.packed_weights): a script gets
the message unpacked and its reply is packed. A site's script gets the message and returns its reply content (a RecordDict), an Error, or None to never answer.
The default script trains by adding the site's offset to every array, validates with a fixed Dice, and describes
itself with a usable case count. A train instruction that also asks for a validation (one message per round) is
answered as the site does: the evaluate script on the instruction as that round's evaluate one, then the train
script, fused into one reply (an Error or no answer from either is the reply).
"""

import itertools
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.config import flatten_dict
from flwr.proto.node_pb2 import NodeInfo
from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from models.packed_weights import pack_content, unpack_content
from models.shared.round_reply import fuse_round_reply

Script = Callable[[Message], RecordDict | Error | None]


def trained(message: Message, offset: float, n_examples: int) -> RecordDict:
    """The train reply of a site whose "training" adds `offset` to every array (dtypes kept)."""
    arrays = message.content["arrays"]
    updated = {name: Array((a.numpy() + offset).astype(a.numpy().dtype)) for name, a in arrays.items()}
    return RecordDict(
        {
            "arrays": ArrayRecord(updated),
            "metrics": MetricRecord({"train-loss": 1.0 - offset, "num-examples": n_examples}),
        }
    )


def validated(dice: float, n_cases: int) -> RecordDict:
    return RecordDict(
        {
            "validation": ConfigRecord({"status": "reported", "min-report-cases": 1, "regions": ["wt"]}),
            "metrics": MetricRecord(
                {"dice-mean": dice, "dice-wt-mean": dice, "n-cases": n_cases, "num-examples": n_cases}
            ),
        }
    )


def as_evaluate(message: Message, server_round: int) -> Message:
    """The evaluate instruction a train instruction that also validates stands for (one message per round)."""
    config = message.content["config"]
    content = RecordDict(
        {
            "arrays": message.content["arrays"],
            "config": ConfigRecord({"server-round": server_round, "run-key": config.get("run-key", "")}),
        }
    )
    return Message(content, dst_node_id=message.metadata.dst_node_id, message_type="evaluate")


def described(name: str, usable: int) -> RecordDict:
    return RecordDict(
        {"site": ConfigRecord({"site-name": name}), "overview": MetricRecord({"n-cases-usable": usable})}
    )


@dataclass
class ScriptedSite:
    name: str
    offset: float = 0.1
    usable: int = 10
    train_cases: int = 8
    dice: float = 0.5
    val_cases: int = 2
    online: bool = True
    """Listed by get_nodes; a site that is not gets Flower's "node unavailable" reply to anything sent to it."""
    reachable: bool = True
    """False: still listed online (its last heartbeat has not expired) but gone; Flower answers "unavailable"."""
    train: Script | None = None
    """Overrides the default training script."""
    evaluate: Script | None = None
    describe: Script | None = None
    shares_local_model: bool = False
    """What its describe reply says of its consent to share its local-only model (the cross-site matrix)."""
    local_model: Script | None = None
    """Answers query.local_model (default: an Error, as for any unexpected message)."""
    cross_evaluate: Script | None = None
    """Answers query.cross_evaluate (default: validated with its own Dice)."""
    registered: bool = True
    """Whether Flower knows the site's name (a registered key) or only what it describes."""
    received: list[tuple[str, int | None, Message]] = field(default_factory=list)
    """(message type, server round when it arrived, the message) of everything sent to the site."""

    def answer(self, message: Message) -> RecordDict | Error | None:
        kind = message.metadata.message_type
        config = message.content.config_records.get("config", {})
        self.received.append((kind, config.get("server-round"), message))
        if kind == "query.describe":
            if self.describe:
                return self.describe(message)
            reply = described(self.name, self.usable)
            reply["site"]["share-local-model-for-evaluation"] = self.shares_local_model
            return reply
        if kind == "query.local_model" and self.local_model:
            return self.local_model(message)
        if kind == "query.cross_evaluate":
            return (
                self.cross_evaluate(message) if self.cross_evaluate else validated(self.dice, self.val_cases)
            )
        if kind == "train":
            evaluated = config.get(
                "evaluate-round"
            )  # one message per round: validate first, as the site does
            validation = self.answer(as_evaluate(message, evaluated)) if evaluated is not None else None
            if validation is not None and not isinstance(validation, RecordDict):
                return validation
            training = self.train(message) if self.train else trained(message, self.offset, self.train_cases)
            if validation is None or not isinstance(training, RecordDict):
                return training
            return fuse_round_reply(training, validation)
        if kind == "evaluate":
            return self.evaluate(message) if self.evaluate else validated(self.dice, self.val_cases)
        return Error(code=0, reason=f"unexpected {kind}")


class ScriptedGrid(Grid):
    def __init__(self, sites: dict[int, ScriptedSite]) -> None:
        self.sites = sites
        self._ids = itertools.count(1)
        self._replies: dict[str, Message] = {}
        self._pending: dict[str, Message] = {}
        self.pushed: list[Message] = []

    def set_run(self, run: Run) -> None:
        raise NotImplementedError

    @property
    def run(self) -> Run:
        raise NotImplementedError

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        return [node for node, site in self.sites.items() if site.online]

    def get_nodes(self) -> list[NodeInfo]:
        return [
            NodeInfo(node_id=node, name=site.name if site.registered else "")
            for node, site in self.sites.items()
            if site.online
        ]

    def push_messages(self, messages) -> list[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = f"m{next(self._ids)}"
            self.pushed.append(message)
            self._pending[message.metadata.message_id] = message
            ids.append(message.metadata.message_id)
            unpack_content(
                message.content
            )  # what a site's packed-wire mod does first (site_app/packed_wire.py)
            site = self.sites.get(message.metadata.dst_node_id)
            if site is not None and site.online and site.reachable:
                answer = site.answer(message)
                if isinstance(answer, RecordDict):
                    answer = pack_content(answer)  # and last
                if answer is not None:
                    self._replies[message.metadata.message_id] = Message(answer, reply_to=message)
        return ids

    def pull_messages(self, message_ids) -> list[Message]:
        """Replies that arrived; for a message whose site is gone now, the SuperLink's "node unavailable"."""
        replies = []
        for message_id in list(message_ids):
            message = self._pending.get(message_id)
            if message is None:
                continue
            site = self.sites.get(message.metadata.dst_node_id)
            if message_id in self._replies:
                replies.append(self._replies.pop(message_id))
            elif site is None or not site.online or not site.reachable:
                replies.append(create_message_error_unavailable_res_message(message.metadata, "node_unavail"))
            else:
                continue
            del self._pending[message_id]
        return replies

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))


PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def scripted_run_config(run_dir: Path, sites: list[str], **settings: object) -> dict:
    """A run config for run_federation on a ScriptedGrid: the app's defaults, the tiny model, two rounds, quorum 2
        of `sites`, one-second waits and deadlines (scripted sites answer at once or never), and no MLflow copy (a
        new sqlite store costs seconds of disk writes per run; tests/unit/test_tracking.py turns it on), updates neither
    clipped nor their weights capped (the robustness defaults are tested in test_adversaries.py); `settings`
        override, `num_server_rounds` or `"num-server-rounds"` alike."""
    defaults = flatten_dict(tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"])
    config = {
        **defaults,
        "run-dir": str(run_dir),
        "model-preset": "tiny",
        "num-server-rounds": 2,
        "min-sites": 2,
        "expected-sites": ",".join(sites),
        "wait-for-sites-s": 1.0,
        "describe-timeout-s": 1.0,
        "train-timeout-s": 1.0,
        "evaluate-timeout-s": 1.0,
        "tracking-uri": "none",
        "update-norm-bound": 0.0,  # scripted training shifts every weight: far beyond an honest update's norm
        "max-site-weight": 1.0,  # the loop's tests weigh by cases as claimed; tests/unit/test_adversaries.py
    }  # runs with the app's defaults
    return config | {key.replace("_", "-"): value for key, value in settings.items()}
