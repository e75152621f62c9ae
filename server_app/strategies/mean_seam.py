"""The one call through which Flower's mean-based strategies average the replies, made replaceable per call.

The seam, in flwr 1.42: `FedAvg.aggregate_train` (flwr/serverapp/strategy/fedavg.py) averages the replies'
arrays with `aggregate_arrayrecords(reply_contents, self.weighted_by_key)`, a function of strategy_utils.py
that fedavg.py imports into its own namespace and looks up there at every call. FedProx inherits that method;
FedOpt's FedAdam, FedYogi and FedAdagrad, and FedAvgM, step from its result through `super().aggregate_train`;
MultiKrum and Krum (flwr/serverapp/strategy/multikrum.py, `MultiKrum.aggregate_train`) call their own import
of it on the replies they selected. Strategies that do not average (FedMedian, FedTrimmedAvg, Bulyan) never
reach it.

`install()` puts `dispatch` in place of that name in both modules, once. Outside an `averaging(...)` scope
`dispatch` is Flower's function, unchanged, so every other strategy in the process averages as Flower does;
inside one, the scope's function averages instead (server_app.strategies.mean_wrapper). Every mean made
through the seam is also handed to the innermost `observed_means()` scope
(server_app.strategies.server_optimizer reads the plain mean its optimizer stepped from). The scopes are
context variables: they end with the call that opened them.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from flwr.app import ArrayRecord, RecordDict
from flwr.serverapp.strategy import fedavg, multikrum, strategy_utils

Averaging = Callable[[list[RecordDict], str], ArrayRecord]
"""Flower's signature: the replies' contents and the metric key weighing them → the mean of their arrays."""

FLOWER_MEAN: Averaging = strategy_utils.aggregate_arrayrecords
SEAM_MODULES = (fedavg, multikrum)
"""The flwr modules whose `aggregate_train` averages through their module-level `aggregate_arrayrecords`."""

_averaging: ContextVar[Averaging | None] = ContextVar("averaging", default=None)
_observed: ContextVar[list[ArrayRecord] | None] = ContextVar("observed_means", default=None)


class SeamMoved(RuntimeError):
    """Flower no longer averages where this module hooks in (another flwr version, or someone else's hook)."""


def dispatch(records: list[RecordDict], weighted_by_key: str) -> ArrayRecord:
    """The mean by the current scope's averaging (Flower's outside any), shown to the current observers."""
    mean = (_averaging.get() or FLOWER_MEAN)(records, weighted_by_key)
    observers = _observed.get()
    if observers is not None:
        observers.append(mean)
    return mean


def install() -> None:
    """Route the seam modules' averaging through `dispatch` (idempotent); SeamMoved if Flower changed it."""
    for module in SEAM_MODULES:
        current = getattr(module, "aggregate_arrayrecords", None)
        if current is dispatch:
            continue
        if current is not FLOWER_MEAN:
            raise SeamMoved(
                f"{module.__name__}.aggregate_arrayrecords is not flwr's strategy_utils function: the"
                " coordinator's mean cannot replace Flower's there (see server_app.strategies.mean_seam)"
            )
        module.aggregate_arrayrecords = dispatch


@contextmanager
def averaging(mean: Averaging) -> Iterator[None]:
    """Within this scope, the seam averages with `mean` (install() first)."""
    token = _averaging.set(mean)
    try:
        yield
    finally:
        _averaging.reset(token)


@contextmanager
def observed_means() -> Iterator[list[ArrayRecord]]:
    """The means made through the seam within this scope, in order."""
    means: list[ArrayRecord] = []
    token = _observed.set(means)
    try:
        yield means
    finally:
        _observed.reset(token)
