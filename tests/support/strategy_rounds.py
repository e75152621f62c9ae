"""Drive a strategy as the federated loop does, without the loop: real Flower messages on a ScriptedGrid.

`train_round` has the strategy configure a training round for the grid's sites, answers each instruction with
the update given for its site (as that site would send it back) and has the strategy aggregate the replies,
sorted by site as the loop passes them.
"""

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import Strategy
from scripted_grid import ScriptedGrid, ScriptedSite

from models.shared.run_config import defaults
from models.transport import encode
from server_app.coordinator_settings import StrategySettings


def sites_grid(n_sites: int) -> ScriptedGrid:
    """A grid of `n_sites` online sites, node ids 11, 12, …"""
    return ScriptedGrid({11 + i: ScriptedSite(f"site-{i}") for i in range(n_sites)})


def settings_of(**overrides: object) -> StrategySettings:
    """The app's default strategy settings with kebab-case overrides (`strategy="fedadam"`)."""
    config = {**defaults(), **{key.replace("_", "-"): value for key, value in overrides.items()}}
    return StrategySettings.from_run_config(config)


def train_reply(
    instruction: Message, arrays: ArrayRecord, n_examples: int, dtype: str = "float32"
) -> Message:
    """A site's train reply to `instruction`: `arrays` sent in `dtype`, weighed by `n_examples`."""
    metrics = MetricRecord({"train-loss": 0.5, "num-examples": n_examples})
    return Message(RecordDict({"arrays": encode(arrays, dtype), "metrics": metrics}), reply_to=instruction)


def train_round(
    strategy: Strategy,
    server_round: int,
    arrays: ArrayRecord,
    updates: list[tuple[ArrayRecord, int]],
    dtype: str = "float32",
) -> tuple[ArrayRecord | None, MetricRecord | None]:
    """One training round over len(updates) sites: site i answers with updates[i] (arrays, num-examples)."""
    grid = sites_grid(len(updates))
    instructions = sorted(
        strategy.configure_train(server_round, arrays, ConfigRecord(), grid),
        key=lambda message: message.metadata.dst_node_id,
    )
    replies = [
        train_reply(instruction, update, n, dtype)
        for instruction, (update, n) in zip(instructions, updates, strict=True)
    ]
    return strategy.aggregate_train(server_round, replies)
