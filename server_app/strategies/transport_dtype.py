"""Weights leave in the run's transport dtype (models.transport), around any strategy.

Transport hands the inner strategy the global model exactly as the sites will receive it (`as_sent`), so that
what the strategy keeps (FedOpt's current weights, central DP's reference for clipping) is what the sites
started from, and encodes the float arrays of the messages it returns. Replies pass through as they came: the
fast mean reads float16 updates in place (server_app.strategies.fast_mean), and a wrapper that computes on the
updates itself decodes them (server_app.strategies.central_dp).
"""

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from models.transport import as_sent, encode
from server_app.strategies.wrapper import StrategyWrapper


class Transport(StrategyWrapper):
    """The inner strategy's messages with their weights in `transport_dtype` ("float32" or "float16")."""

    def __init__(self, strategy: Strategy, transport_dtype: str) -> None:
        super().__init__(strategy)
        self.transport_dtype = transport_dtype

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        sent = as_sent(arrays, self.transport_dtype)
        return self._encoded(self.strategy.configure_train(server_round, sent, config, grid))

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        sent = as_sent(arrays, self.transport_dtype)
        return self._encoded(self.strategy.configure_evaluate(server_round, sent, config, grid))

    def _encoded(self, messages: Iterable[Message]) -> list[Message]:
        """Replace the ArrayRecords of the messages' (shared) content by their encoded form (each once)."""
        messages = list(messages)
        if self.transport_dtype == "float32":
            return messages
        done: dict[int, ArrayRecord] = {}
        for message in messages:
            content = message.content
            for key, record in list(content.array_records.items()):
                if id(record) not in done:
                    encoded = encode(record, self.transport_dtype)
                    done[id(record)] = done[id(encoded)] = encoded
                content[key] = done[id(record)]
        return messages
