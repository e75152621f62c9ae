"""The site's limits on the coordinator's run settings: a run outside them is refused before anything is loaded.

The coordinator chooses spacing, patch size, samples per case, batch size, local epochs and personalization
epochs; each changes how much
memory, time and work-folder space the site spends (a new spacing or patch size also writes a new cache copy of
every case). The site checks every one of them against its own limits, kept in its node config (site.toml's
`[limits]` table in a kit; keys "limits.<key>" in the node config) with these defaults:

    [limits]
    spacing-mm-min = 0.8              # finest isotropic resampling, mm (BraTS data are 1 mm)
    spacing-mm-max = 8.0
    patch-size-max = 160              # training patch edge, voxels
    samples-per-case-max = 16
    batch-size-max = 16
    local-epochs-max = 20
    max-resampled-voxels = 67108864   # per case after resampling to spacing-mm (2^26, about 406^3)
    personalize-epochs-max = 20       # epochs of fine-tuning the personalized model at each validation
    batch-size-min = 2                # lower bounds: the coordinator cannot ask for the best conditions for
    samples-per-case-min = 2          # gradient inversion (below)
    local-steps-min = 10              # local-epochs x ceil(training patches / batch-size), per round
    max-evaluations-per-round = 2     # validations answered per round of a run, and per run
    max-evaluations-per-run = 200     # (site_app.disclosure.evaluation_budget)

`max-resampled-voxels` is checked from the inventory's stored shapes and spacings before any case is resampled
(`max-voxels`, also in `[limits]`, is the separate check of stored headers when the inventory is built). A run
outside a limit gets a REFUSED reply naming the setting, its value and the limit; the site log says the same and
nothing is written to the cache. A simulation (no node config) uses the defaults, but for its lower bounds,
which are 1, and its evaluation budget, which is unlimited (SIMULATION_LOWER_BOUNDS: all sites are the
operator's own data on one machine, so there is no curious coordinator to bound, and tiny test federations
train one patch per step).

Why lower bounds. A coordinator that reads a site's update can try to invert it into the training patches.
Geiping et al. 2020 ("Inverting Gradients - How easy is it to break privacy in federated learning?", NeurIPS)
show reconstruction quality falling sharply with batch size and over several local steps; Hatamizadeh et al.
2022/2023 ("Do Gradient Inversion Attacks Make Federated Learning Unsafe?", IEEE TMI, on medical images) find the
risk highest for batch size 1 and a single local step, and reduced by larger batches, more local iterations and
DP noise. So a site refuses the settings that make the attack easiest: fewer than `batch-size-min` patches per
step (2: never one patch alone, the papers' best case; the model's default batch, so a default run is never refused
and the bound costs no accuracy), fewer than `samples-per-case-min` patches per case (2: one patient's update is never one patch), and
fewer than `local-steps-min` optimizer steps per round (10: local-epochs x ceil(training patches / batch size),
checked when the training set is known). These make inversion harder; they do not make it impossible (README,
Privacy: what the weights reveal is not covered).
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from models.shared.node_config import LIMIT_KEYS, limit_key
from models.shared.wire import OutsideLimit

if TYPE_CHECKING:  # type hints only: site.toml's parser imports this module and stays light
    from data_prep.inventory import Inventory
    from site_app.settings.run_settings import SiteRunSettings

DEFAULT_LIMITS: Mapping[str, int | float] = {
    "spacing-mm-min": 0.8,
    "spacing-mm-max": 8.0,
    "patch-size-max": 160,
    "samples-per-case-max": 16,
    "batch-size-max": 16,
    "local-epochs-max": 20,
    "max-resampled-voxels": 2**26,
    "personalize-epochs-max": 20,
    "batch-size-min": 2,
    "samples-per-case-min": 2,
    "local-steps-min": 10,
    "max-evaluations-per-round": 2,
    "max-evaluations-per-run": 200,
}
"""The limits of a site that sets none (keys: models.shared.node_config.LIMIT_KEYS, in order)."""
assert tuple(DEFAULT_LIMITS) == LIMIT_KEYS
SIMULATION_LOWER_BOUNDS: Mapping[str, int] = {
    "batch-size-min": 1,
    "samples-per-case-min": 1,
    "local-steps-min": 1,
    "max-evaluations-per-round": 2**31 - 1,
    "max-evaluations-per-run": 2**31 - 1,
}
"""A simulated site's lower bounds and (no) evaluation budget (the module docstring says why); its other limits
are the defaults."""


class OutsideSiteLimits(ValueError):
    """A run setting is outside this site's limits; the message names the setting, its value and the limit, and
    `outside` says the same, typed, for the refused reply (models.shared.wire.OutsideLimit)."""

    def __init__(self, message: str, outside: OutsideLimit) -> None:
        super().__init__(message)
        self.outside = outside


@dataclass(frozen=True)
class SiteLimits:
    spacing_mm_min: float
    spacing_mm_max: float
    patch_size_max: int
    samples_per_case_max: int
    batch_size_max: int
    local_epochs_max: int
    max_resampled_voxels: int
    personalize_epochs_max: int
    batch_size_min: int
    samples_per_case_min: int
    local_steps_min: int
    max_evaluations_per_round: int
    max_evaluations_per_run: int

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, object]) -> "SiteLimits":
        """The limits in the node config ("limits.<key>"), the defaults for the others; wrong values are errors."""
        table = {key: node_config[limit_key(key)] for key in LIMIT_KEYS if limit_key(key) in node_config}
        return cls.from_table(table, "node config ")

    @classmethod
    def simulated(cls) -> "SiteLimits":
        """A simulated site's limits: the defaults, with SIMULATION_LOWER_BOUNDS."""
        return cls.from_table(SIMULATION_LOWER_BOUNDS, "simulation ")

    @classmethod
    def from_table(cls, table: Mapping[str, object], source: str) -> "SiteLimits":
        """The limits in `table` (keys of LIMIT_KEYS, e.g. site.toml's [limits]), the defaults for the others.

        A wrong value raises ValueError: `source` (e.g. "node config ", "<path>: ") + the key + what is wrong."""
        values = {}
        for key, default in DEFAULT_LIMITS.items():
            value = table.get(key, default)
            name = f"{source}`{limit_key(key)}`"
            kind = float if isinstance(default, float) else int
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
            if kind is int and value != int(value):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
            values[key.replace("-", "_")] = kind(value)
        limits = cls(**values)
        if limits.spacing_mm_min > limits.spacing_mm_max:
            raise ValueError(
                f"{source}`{limit_key('spacing-mm-min')}` ({limits.spacing_mm_min}) is above "
                f"`{limit_key('spacing-mm-max')}` ({limits.spacing_mm_max})"
            )
        for low, high in (
            ("batch-size-min", "batch-size-max"),
            ("samples-per-case-min", "samples-per-case-max"),
        ):
            if values[low.replace("-", "_")] > values[high.replace("-", "_")]:
                raise ValueError(f"{source}`{limit_key(low)}` is above `{limit_key(high)}`")
        return limits

    def as_dict(self) -> dict[str, int | float]:
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}


def check_run_settings(settings: "SiteRunSettings", limits: SiteLimits) -> None:
    """Raise OutsideSiteLimits for the first coordinator setting outside the site's limits (each is at least 1
    already: the run config's own checks, models.shared.run_config)."""
    pipeline = settings.pipeline
    _spacing_within(pipeline.spacing_mm, limits.spacing_mm_min, limits.spacing_mm_max)
    _at_most("patch-size", pipeline.patch_size, limits.patch_size_max, "patch-size-max")
    _at_most(
        "samples-per-case", pipeline.samples_per_case, limits.samples_per_case_max, "samples-per-case-max"
    )
    _at_least(
        "samples-per-case", pipeline.samples_per_case, limits.samples_per_case_min, "samples-per-case-min"
    )
    _at_most("batch-size", settings.batch_size, limits.batch_size_max, "batch-size-max")
    _at_least("batch-size", settings.batch_size, limits.batch_size_min, "batch-size-min")
    _at_most("local-epochs", settings.local_epochs, limits.local_epochs_max, "local-epochs-max")
    _at_most(
        "personalize-epochs",
        settings.personalize_epochs,
        limits.personalize_epochs_max,
        "personalize-epochs-max",
    )


def local_steps(settings: "SiteRunSettings", n_training_cases: int) -> int:
    """Optimizer steps of one round: local-epochs x ceil(training patches / batch size)."""
    patches = n_training_cases * settings.pipeline.samples_per_case
    return settings.local_epochs * math.ceil(patches / settings.batch_size)


def check_local_steps(settings: "SiteRunSettings", n_training_cases: int, limits: SiteLimits) -> None:
    """Raise OutsideSiteLimits when a round would take fewer than local-steps-min optimizer steps. The message
    names the run settings and the bound, not the number of training cases or steps (case figures)."""
    if local_steps(settings, n_training_cases) >= limits.local_steps_min:
        return
    limit = limit_key("local-steps-min")
    raise OutsideSiteLimits(
        f"run settings local-epochs = {settings.local_epochs}, batch-size = {settings.batch_size} and"
        f" samples-per-case = {settings.pipeline.samples_per_case} give fewer local steps per round on this"
        f" site's training set than its limit {limit} = {limits.local_steps_min}; raise local-epochs or"
        " samples-per-case, or lower batch-size",
        OutsideLimit("local-epochs", settings.local_epochs, limit, limits.local_steps_min),
    )


def check_resampled_size(inventory: "Inventory", settings: "SiteRunSettings", limits: SiteLimits) -> None:
    """Raise OutsideSiteLimits when resampling any usable case to spacing-mm (or padding it to the patch) would
    exceed max-resampled-voxels; computed from the stored shape and spacing, before anything is resampled."""
    spacing, patch = settings.pipeline.spacing_mm, settings.pipeline.patch_size
    largest = patch**3
    for case in inventory.usable:
        if case.shape and case.spacing_mm:
            resampled = math.prod(math.ceil(n * s / spacing) for n, s in zip(case.shape, case.spacing_mm))
            largest = max(largest, resampled)
    if largest > limits.max_resampled_voxels:
        limit = limit_key("max-resampled-voxels")
        raise OutsideSiteLimits(
            f"run setting spacing-mm = {spacing:g} (patch-size {patch}) would resample a case of this site above "
            f"the site's limit {limit} = {limits.max_resampled_voxels:,} voxels; use a coarser spacing-mm or ask "
            "the site to raise its limit",
            OutsideLimit("spacing-mm", spacing, limit, limits.max_resampled_voxels),
        )


def _spacing_within(value: float, low: float, high: float) -> None:
    if low <= value <= high:
        return
    limit = limit_key("spacing-mm-min" if value < low else "spacing-mm-max")
    bound = low if value < low else high
    raise OutsideSiteLimits(
        f"run setting spacing-mm = {value:g} is outside this site's limits: {limit} = {bound:g} (allowed "
        f"{low:g}-{high:g} mm)",
        OutsideLimit("spacing-mm", value, limit, bound),
    )


def _at_most(key: str, value: int, high: int, limit_name: str) -> None:
    if value <= high:
        return
    limit = limit_key(limit_name)
    raise OutsideSiteLimits(
        f"run setting {key} = {value:g} is above this site's limit {limit} = {high:g}",
        OutsideLimit(key, value, limit, high),
    )


def _at_least(key: str, value: int, low: int, limit_name: str) -> None:
    if value >= low:
        return
    limit = limit_key(limit_name)
    raise OutsideSiteLimits(
        f"run setting {key} = {value:g} is below this site's limit {limit} = {low:g}",
        OutsideLimit(key, value, limit, low),
    )
