"""Central differential privacy: Flower's server-side fixed clipping around a strategy, ε accounted per round.

CentralDp is Flower's DifferentialPrivacyServerSideFixedClipping (itself a wrapper: it clips each update to
the clipping norm C around the global model, has the inner strategy aggregate them and adds Gaussian noise σ =
z·C/n to the result) with the privacy spent tracked by Flower's RDP accountant. The noise is calibrated for an
equally weighted mean of the clipped updates: the strategy inside must weigh every site the same
(server_app.strategies.registry builds the fast mean with `uniform_weights` when central DP is on; a weighted
mean would give one site more than C/n of influence).

Replies arrive checked by the federated loop (a malformed reply is dropped there, never clipped) and are
decoded from the transport dtype here, before clipping. After each release the accountant composes a Gaussian
event with the noise multiplier the release actually had: σ = z·C/n was added to the mean of m clipped
updates, whose sensitivity is C/m, so the event's multiplier is z·m/n (= z when every site replied).
"""

from collections.abc import Iterable
from logging import INFO

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig, SamplingMethod
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, Strategy

from models.transport import decode
from server_app.coordinator_settings import StrategySettings


class CentralDp(DifferentialPrivacyServerSideFixedClipping):
    """Flower's central DP (server-side fixed clipping) around `strategy` for `n_sites` sites, ε accounted."""

    def __init__(self, strategy: Strategy, settings: StrategySettings, n_sites: int) -> None:
        from flwr.serverapp import RdpAccountant  # needs flwr[dp] (dp-accounting)

        super().__init__(strategy, settings.dp_noise_multiplier, settings.dp_clipping_norm, n_sites)
        self.n_sites = n_sites
        self.ledger = RdpAccountant(  # not Flower's `accountant` slot: its accounted mode needs equal weights
            PrivacyConfig(
                target_delta=settings.dp_delta,
                population_size=n_sites,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SamplingMethod.NO_AMPLIFICATION,
            )
        )
        self.epsilon_by_round: dict[int, float] = {}

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        sound = [r for r in replies if not r.has_error()]  # Flower's DP wrapper skips a round with any error
        for reply in sound:
            for name, record in list(reply.content.array_records.items()):
                reply.content[name] = decode(record)
        arrays, metrics = super().aggregate_train(server_round, sound)
        if arrays is not None:
            self._account(server_round, released=min(len(sound), self.n_sites))
        return arrays, metrics

    def _account(self, server_round: int, released: int) -> None:
        """Compose the round's Gaussian event (`released` updates in the mean) and note ε so far."""
        event = GaussianPrivacyEvent(
            noise_multiplier=self.noise_multiplier * released / self.n_sites,
            sample_size=released,
            population_size=self.n_sites,
        )
        self.ledger.compose(event)
        spent = self.ledger.get_privacy_spent()
        self.epsilon_by_round[server_round] = spent.epsilon
        log(INFO, "Central DP: ε = %.4f at δ = %g after %d rounds", spent.epsilon, spent.delta, server_round)

    def privacy(self, server_round: int) -> dict[str, float] | None:
        """ε spent up to and including `server_round` (None before the first release)."""
        spent = [eps for rnd, eps in self.epsilon_by_round.items() if rnd <= server_round]
        if not spent:
            return None
        return {"epsilon": spent[-1], "delta": self.ledger.config.target_delta}

    def state_dict(self) -> dict[str, object]:
        """The inner strategy's state, the accountant's ledger and ε by round."""
        inner = getattr(self.strategy, "state_dict", None)
        return {
            "inner": inner() if inner is not None else {},
            "ledger": self.ledger.state_dict(),
            "epsilon_by_round": {str(k): v for k, v in self.epsilon_by_round.items()},
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        load = getattr(self.strategy, "load_state_dict", None)
        if load is not None:
            load(state["inner"])
        self.ledger.load_state_dict(state["ledger"])  # type: ignore[arg-type]
        by_round: dict[str, float] = state["epsilon_by_round"]  # type: ignore[assignment]
        self.epsilon_by_round = {int(k): float(v) for k, v in by_round.items()}
