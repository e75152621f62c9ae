"""The base strategies: the run config's `strategy` → how to build that Flower strategy from the settings.

A base strategy decides what becomes of the sites' updates; everything the coordinator adds around it
(transport, the fast mean, pooled evaluation, central DP) is a wrapper (server_app.strategies.registry). Each
entry of BASE_STRATEGIES is a factory `(settings, n_sites, **fedavg_args) -> Strategy`, where `fedavg_args`
are FedAvg's keyword arguments: sampling, and the wire contract's record keys (RECORD_KEYS). Adding a strategy
is one factory and one entry, plus its name among the `strategy` setting's choices (models.shared.run_config);
the robust ones of Flower's library (fedmedian, fedtrimmedavg, krum, multikrum) are server_app.strategies.robust's.
"""

from typing import Protocol

from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, FedYogi, Strategy

from models.shared.wire import NUM_EXAMPLES, Record
from server_app.coordinator_settings import StrategySettings
from server_app.strategies.robust import fedmedian, fedtrimmedavg, krum, multikrum
from server_app.strategies.server_optimizer import ServerOptimizer
from server_app.strategies.wrapper import StrategyWrapper


class BaseFactory(Protocol):
    """Builds a base strategy from the strategy settings, the federation's size and FedAvg's arguments."""

    def __call__(self, settings: StrategySettings, n_sites: int, **fedavg_args: object) -> Strategy: ...


RECORD_KEYS: dict[str, str] = {
    "weighted_by_key": NUM_EXAMPLES,
    "arrayrecord_key": Record.ARRAYS,
    "configrecord_key": Record.CONFIG,
}
"""Where a strategy finds the weights and the weighing count in a reply, and puts the config in a message."""


def fedavg(settings: StrategySettings, n_sites: int, **fedavg_args: object) -> Strategy:
    """The mean of the updates weighted by the sites' training cases."""
    return FedAvg(**fedavg_args)


def fedprox(settings: StrategySettings, n_sites: int, **fedavg_args: object) -> Strategy:
    """FedAvg's mean; each train instruction carries μ, the weight of the sites' proximal term."""
    return FedProx(**fedavg_args, proximal_mu=settings.proximal_mu)


def _server_optimizer(settings: StrategySettings) -> dict[str, float]:
    return {
        "eta": settings.server_lr,
        "beta_1": settings.beta1,
        "beta_2": settings.beta2,
        "tau": settings.tau,
    }


def fedadam(settings: StrategySettings, n_sites: int, **fedavg_args: object) -> Strategy:
    """An Adam step of the server optimizer on the averaged update."""
    return ServerOptimizer(FedAdam(**fedavg_args, **_server_optimizer(settings)))


def fedyogi(settings: StrategySettings, n_sites: int, **fedavg_args: object) -> Strategy:
    """A Yogi step of the server optimizer on the averaged update."""
    return ServerOptimizer(FedYogi(**fedavg_args, **_server_optimizer(settings)))


BASE_STRATEGIES: dict[str, BaseFactory] = {
    "fedavg": fedavg,
    "fedprox": fedprox,
    "fedadam": fedadam,
    "fedyogi": fedyogi,
    "fedmedian": fedmedian,
    "fedtrimmedavg": fedtrimmedavg,
    "krum": krum,
    "multikrum": multikrum,
}


class Named(StrategyWrapper):
    """The base strategy under its run-config name, which its saved state carries: a run resumes only with the
    strategy it started with."""

    def __init__(self, strategy: Strategy, name: str) -> None:
        super().__init__(strategy)
        self.name = name

    def state_dict(self) -> dict[str, object]:
        return {"strategy": self.name, **super().state_dict()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        if state.get("strategy") != self.name:
            raise ValueError(
                f"the saved strategy state is for {state.get('strategy')!r}, this run uses {self.name!r}"
            )
        super().load_state_dict({k: v for k, v in state.items() if k != "strategy"})


def build_base(settings: StrategySettings, n_sites: int, **fedavg_args: object) -> Named:
    """The base strategy the run config names (`settings.strategy`, one of BASE_STRATEGIES), reading and
    writing messages by the wire contract's keys."""
    factory = BASE_STRATEGIES[settings.strategy]
    return Named(factory(settings, n_sites, **RECORD_KEYS, **fedavg_args), settings.strategy)
