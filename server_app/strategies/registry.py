"""The run's strategy: the base strategy the run config names, inside the wrappers its settings call for.

build_strategy takes the base from server_app.strategies.base's table and applies WRAPPERS in order, innermost
first, each that applies to the run's settings:

    pooled-evaluation  the evaluation pooled over the reporting sites (pooled_evaluation.PooledEvaluation)
    fast-mean          the fast weighted mean as the base's averaging step (mean_wrapper.FastMean); every
                       site weighed the same under central DP
    site-weight        with `max-site-weight` < 1 (default 0.5), no site more than that share of the mean
                       (site_weight.SiteWeightCap; not under central DP, whose weights are equal)
    central-dp         with `dp-noise-multiplier` > 0: clipping, noise and ε (central_dp.CentralDp)
    update-direction   with `update-min-cosine` > -1 (default 0.2), the update of a site claiming more than
                       `max-site-weight` of the cases is left out unless it points, over the run, with the
                       coordinate-wise median of the others' updates (update_direction.UpdateDirection)
    update-norm        every update's norm recorded per site and round; one above `update-norm-drop-factor`
                       × the round's median norm (default 10) left out; the others clipped to
                       `update-norm-bound` and `update-norm-median-factor` × that median
                       (update_norm.UpdateNormBound)
    lr-schedule        every train instruction carries the round's share of the sites' learning rate
                       (lr_schedule.LearningRateSchedule)
    transport          weights leave in the run's transport dtype (transport.Transport)

The order follows the data: transport is outermost, so every layer inside keeps the weights as the sites
received them; central DP clips the updates before the mean is taken inside it and adds its noise to the
result; the update-norm bound is outside both, so that what it records is what each site sent and what they
see is bounded; the weight cap rewrites the weighing counts the mean inside it reads; the fast mean is inside central DP, around the base whose averaging it replaces (pooled evaluation
touches only the evaluation, so its place does not matter). A new wrapper is one more Wrapper in the list, at
the place its data flow asks for.

Under `secure-aggregation` the strategy gets one reply per round, the unmasked weighted mean of the sites'
updates (server_app.rounds.secure_aggregation): the weight cap and the update-norm bound happen at the sites,
before masking (so neither wrapper applies and no per-site norm is recorded), and central DP is refused
(StrategySettings).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flwr.serverapp.strategy import Strategy

from server_app.coordinator_settings import StrategySettings
from server_app.strategies.base import build_base
from server_app.strategies.central_dp import CentralDp
from server_app.strategies.lr_schedule import LearningRateSchedule
from server_app.strategies.mean_wrapper import FastMean
from server_app.strategies.pooled_evaluation import PooledEvaluation
from server_app.strategies.site_weight import SiteWeightCap
from server_app.strategies.transport_dtype import Transport
from server_app.strategies.update_direction import UpdateDirection
from server_app.strategies.update_norm import UpdateNormBound
from server_app.strategies.wrapper import layers


@dataclass(frozen=True)
class Wrapper:
    """One behaviour around the strategy: whether a run's settings ask for it, and how to wrap a strategy."""

    name: str
    applies: Callable[[StrategySettings], bool]
    wrap: Callable[[Strategy, StrategySettings, int], Strategy]
    """(the strategy so far, the strategy settings, the federation's number of sites) → the wrapped one."""


def _always(settings: StrategySettings) -> bool:
    return True


def _plaintext(settings: StrategySettings) -> bool:
    """Each site's update reaches the strategy (not under secure aggregation, where it sees one unmasked mean)."""
    return not settings.secure_aggregation


WRAPPERS: tuple[Wrapper, ...] = (
    Wrapper("pooled-evaluation", _always, lambda inner, settings, n_sites: PooledEvaluation(inner)),
    Wrapper(
        "fast-mean",
        _always,
        lambda inner, settings, n_sites: FastMean(inner, uniform_weights=settings.dp),
    ),
    Wrapper(
        "site-weight",
        lambda settings: settings.max_site_weight < 1 and not settings.dp and not settings.secure_aggregation,
        lambda inner, settings, n_sites: SiteWeightCap(inner, settings.max_site_weight),
    ),
    Wrapper(
        "central-dp",
        lambda settings: settings.dp,
        lambda inner, settings, n_sites: CentralDp(inner, settings, n_sites),
    ),
    Wrapper(
        "update-direction",
        lambda settings: settings.update_min_cosine > -1 and not settings.secure_aggregation,
        lambda inner, settings, n_sites: UpdateDirection(
            inner, settings.update_min_cosine, settings.max_site_weight
        ),
    ),
    Wrapper(
        "update-norm",
        _plaintext,
        lambda inner, settings, n_sites: UpdateNormBound(
            inner,
            settings.update_norm_bound,
            settings.update_norm_median_factor,
            settings.update_norm_drop_factor,
        ),
    ),
    Wrapper(
        "lr-schedule",
        _always,
        lambda inner, settings, n_sites: LearningRateSchedule(
            inner, settings.lr_schedule, settings.num_rounds, settings.lr_final_share
        ),
    ),
    Wrapper(
        "transport",
        _always,
        lambda inner, settings, n_sites: Transport(inner, settings.transport_dtype),
    ),
)
"""The wrappers, innermost first."""


@dataclass(frozen=True)
class RunStrategy:
    """What the ServerApp drives (`run`, the outermost layer), and what its layers report."""

    run: Strategy

    def privacy(self, server_round: int) -> dict[str, float] | None:
        """ε and δ spent up to `server_round` under central DP; None without it or before its first round."""
        dp = next((layer for layer in layers(self.run) if isinstance(layer, CentralDp)), None)
        return dp.privacy(server_round) if dp is not None else None

    def update_norms(self, server_round: int) -> dict[int, float]:
        """Node → L2 norm of the update it sent in `server_round`, as it arrived ({} without training)."""
        bound = next((layer for layer in layers(self.run) if isinstance(layer, UpdateNormBound)), None)
        return bound.update_norms(server_round) if bound is not None else {}

    def update_cosines(self, server_round: int) -> dict[int, float]:
        """Node → cosine of its update with the round's median update ({} without the direction check)."""
        check = next((layer for layer in layers(self.run) if isinstance(layer, UpdateDirection)), None)
        return check.update_cosines(server_round) if check is not None else {}


def build_strategy(
    settings: StrategySettings,
    n_sites: int,
    *,
    wrappers: Sequence[Wrapper] = WRAPPERS,
    **fedavg_args: object,
) -> RunStrategy:
    """The strategy the run config asks for (its settings checked by StrategySettings, e.g. central DP only
    around fedavg or fedprox): the base strategy inside each of `wrappers` that applies. `fedavg_args` are
    FedAvg's keyword arguments (the loop's ALL_SELECTED); `n_sites` is central DP's n (σ = z·C/n)."""
    strategy: Strategy = build_base(settings, n_sites, **fedavg_args)
    for wrapper in wrappers:
        if wrapper.applies(settings):
            strategy = wrapper.wrap(strategy, settings, n_sites)
    return RunStrategy(run=strategy)
