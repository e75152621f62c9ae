"""The run config's `strategy`, built from Flower's strategy classes and the coordinator's own pieces.

Every strategy is one class composed from, in method-resolution order:

    Transport   weights leave in the run's transport dtype (float16 or float32) and come back decoded;
                the arrays the strategy itself keeps (FedOpt's current weights) are exactly those the sites got
    SiteFedAvg  FedAvg by `num-examples`, pooled evaluation over the reporting sites (server_app.strategies.checked_fedavg)
    Flower      FedProx (sends `proximal-mu`), FedAdam or FedYogi (server optimizer on the averaged update)
    FastMean    the weighted mean itself (server_app.strategies.fast_mean), in place of Flower's array aggregation
    FedAvg

`fedavg` is Transport + SiteFedAvg + FastMean. The federated loop (server_app.rounds.loop) drives the strategy:
it checks every reply (in the transport dtype) before the strategy sees it and files the per-site records. With central DP (`dp-noise-multiplier` > 0) the strategy is
wrapped by Flower's DifferentialPrivacyServerSideFixedClipping (`SiteDpFixedClipping` below), and ε is tracked
with Flower's RDP accountant.

Every strategy has `state_dict()` / `load_state_dict()`: what a resumed run needs to continue the same
optimization (FedAdam/FedYogi moments, the privacy accountant's ledger), as tensors and plain values, loadable
with `torch.load(..., weights_only=True)`.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from logging import INFO

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import GaussianPrivacyEvent, Grid, NeighboringRelation, PrivacyConfig, SamplingMethod
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedProx,
    FedYogi,
    Strategy,
)

from models.transport import as_sent, decode, encode
from server_app.coordinator_settings import SERVER_OPTIMIZERS, StrategySettings
from server_app.strategies.checked_fedavg import SiteFedAvg
from server_app.strategies.fast_mean import FastMean

OPTIMIZER_STATE = ("m_t", "v_t")
"""FedOpt's moments: per-array running means of the update and of its square (numpy dicts on the strategy)."""


class Transport(SiteFedAvg):
    """Weights travel in `transport_dtype`; the strategy works on exactly the values the sites received."""

    name = "fedavg"
    """The run config's `strategy` value this class implements."""
    transport_dtype: str = "float32"

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        sent = as_sent(arrays, self.transport_dtype)
        return self._encoded(super().configure_train(server_round, sent, config, grid))

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        sent = as_sent(arrays, self.transport_dtype)
        return self._encoded(super().configure_evaluate(server_round, sent, config, grid))

    def _encoded(self, messages: Iterable[Message]) -> list[Message]:
        """Replace the arrays of the messages' (shared) content by their encoded form, encoding each once."""
        messages = list(messages)
        if self.transport_dtype == "float32":
            return messages
        done: dict[int, ArrayRecord] = {}
        for message in messages:
            content = message.content
            record = content[self.arrayrecord_key]
            if id(record) not in done:
                done[id(record)] = encode(record, self.transport_dtype)
            content[self.arrayrecord_key] = done[id(record)]
        return messages

    def state_dict(self) -> dict[str, object]:
        """What a resumed run needs to continue this strategy (none for a plain mean)."""
        return {"strategy": self.name}

    def load_state_dict(self, state: dict[str, object]) -> None:
        if state.get("strategy") != self.name:
            raise ValueError(
                f"the saved strategy state is for {state.get('strategy')!r}, this run uses {self.name!r}"
            )


class OptimizerState(Transport):
    """FedOpt (FedAdam, FedYogi) on float arrays only, and its state_dict: the first and second moments.

    Flower's FedOpt steps every array; an integer array (a counter such as BatchNorm's `num_batches_tracked`) is
    instead given the plain weighted mean."""

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None and self.latest_mean is not None:
            for name, array in self.latest_mean.items():
                if np.dtype(array.dtype).kind != "f":
                    arrays[name] = array
        return arrays, metrics

    def state_dict(self) -> dict[str, object]:
        state: dict[str, object] = {"strategy": self.name}
        for key in OPTIMIZER_STATE:
            moments = getattr(self, key)
            state[key] = {k: torch.from_numpy(np.array(v)) for k, v in moments.items()} if moments else {}
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        super().load_state_dict(state)
        for key in OPTIMIZER_STATE:
            moments = state.get(key) or {}
            setattr(self, key, {k: v.numpy().copy() for k, v in moments.items()} or None)  # type: ignore[union-attr]


class SiteFedAvgStrategy(Transport, FastMean):
    name = "fedavg"


class SiteFedProx(Transport, FedProx, FastMean):
    name = "fedprox"


class SiteFedAdam(OptimizerState, FedAdam, FastMean):
    name = "fedadam"


class SiteFedYogi(OptimizerState, FedYogi, FastMean):
    name = "fedyogi"


STRATEGY_CLASSES: dict[str, type[Transport]] = {
    "fedavg": SiteFedAvgStrategy,
    "fedprox": SiteFedProx,
    "fedadam": SiteFedAdam,
    "fedyogi": SiteFedYogi,
}


class SiteDpFixedClipping(DifferentialPrivacyServerSideFixedClipping):
    """Flower's central DP (server-side fixed clipping) around a Transport strategy, with ε accounted.

    Replies arrive checked by the federated loop (a malformed reply is dropped there, never clipped) and are
    decoded here before clipping; the inner mean weighs every site equally (a weighted mean would give one site more than C/n of influence,
    which the noise is not calibrated for). After each release the accountant composes a Gaussian event with
    the noise multiplier the release actually had: σ = z·C/n was added to the mean of m clipped updates, whose
    sensitivity is C/m, so the event's multiplier is z·m/n (= z when every site replied).
    """

    def __init__(self, inner: Transport, settings: StrategySettings, n_sites: int) -> None:
        from flwr.serverapp import RdpAccountant  # needs flwr[dp] (dp-accounting)

        super().__init__(inner, settings.dp_noise_multiplier, settings.dp_clipping_norm, n_sites)
        inner.uniform_weights = True
        self.inner = inner
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

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return super().configure_train(
            server_round, as_sent(arrays, self.inner.transport_dtype), config, grid
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        sound = [r for r in replies if not r.has_error()]  # Flower's DP wrapper skips a round with any error
        for reply in sound:
            for name, record in list(reply.content.array_records.items()):
                reply.content[name] = decode(record)
        arrays, metrics = super().aggregate_train(server_round, sound)
        if arrays is not None:
            released = min(len(sound), self.n_sites)
            event = GaussianPrivacyEvent(
                noise_multiplier=self.noise_multiplier * released / self.n_sites,
                sample_size=released,
                population_size=self.n_sites,
            )
            self.ledger.compose(event)
            spent = self.ledger.get_privacy_spent()
            self.epsilon_by_round[server_round] = spent.epsilon
            log(
                INFO,
                "Central DP: ε = %.4f at δ = %g after %d rounds",
                spent.epsilon,
                spent.delta,
                server_round,
            )
        return arrays, metrics

    def privacy(self, server_round: int) -> dict[str, float] | None:
        """ε spent up to and including `server_round` (None before the first release)."""
        spent = [eps for rnd, eps in self.epsilon_by_round.items() if rnd <= server_round]
        if not spent:
            return None
        return {"epsilon": spent[-1], "delta": self.ledger.config.target_delta}

    def state_dict(self) -> dict[str, object]:
        return {
            "inner": self.inner.state_dict(),
            "ledger": self.ledger.state_dict(),
            "epsilon_by_round": {str(k): v for k, v in self.epsilon_by_round.items()},
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.inner.load_state_dict(state["inner"])  # type: ignore[arg-type]
        self.ledger.load_state_dict(state["ledger"])  # type: ignore[arg-type]
        self.epsilon_by_round = {int(k): float(v) for k, v in state["epsilon_by_round"].items()}  # type: ignore[union-attr]


@dataclass(frozen=True)
class RunStrategy:
    """What the ServerApp drives (`run`) and the site-aware strategy inside it (`sites`, the same without DP)."""

    run: Strategy
    sites: Transport

    def privacy(self, server_round: int) -> dict[str, float] | None:
        return self.run.privacy(server_round) if isinstance(self.run, SiteDpFixedClipping) else None


def build_strategy(settings: StrategySettings, n_sites: int, **site_fedavg: object) -> RunStrategy:
    """The strategy the run config asks for (its settings checked by StrategySettings, e.g. central DP only around
    fedavg or fedprox); `site_fedavg` are SiteFedAvg's and FedAvg's keyword arguments."""
    cls = STRATEGY_CLASSES[settings.strategy]
    extra: dict[str, object] = {}
    if settings.strategy == "fedprox":
        extra = {"proximal_mu": settings.proximal_mu}
    elif settings.strategy in SERVER_OPTIMIZERS:
        extra = {
            "eta": settings.server_lr,
            "beta_1": settings.beta1,
            "beta_2": settings.beta2,
            "tau": settings.tau,
        }
    inner = cls(**site_fedavg, **extra)
    inner.transport_dtype = settings.transport_dtype
    if not settings.dp:
        return RunStrategy(run=inner, sites=inner)
    return RunStrategy(run=SiteDpFixedClipping(inner, settings, n_sites), sites=inner)
