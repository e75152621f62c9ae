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

`max-resampled-voxels` is checked from the inventory's stored shapes and spacings before any case is resampled
(`max-voxels`, also in `[limits]`, is the separate check of stored headers when the inventory is built). A run
outside a limit gets a REFUSED reply naming the setting, its value and the limit; the site log says the same and
nothing is written to the cache. A simulation (no node config) uses the defaults.
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
}
"""The limits of a site that sets none (keys: models.shared.node_config.LIMIT_KEYS, in order)."""
assert tuple(DEFAULT_LIMITS) == LIMIT_KEYS


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

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, object]) -> "SiteLimits":
        """The limits in the node config ("limits.<key>"), the defaults for the others; wrong values are errors."""
        table = {key: node_config[limit_key(key)] for key in LIMIT_KEYS if limit_key(key) in node_config}
        return cls.from_table(table, "node config ")

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
    _at_most("batch-size", settings.batch_size, limits.batch_size_max, "batch-size-max")
    _at_most("local-epochs", settings.local_epochs, limits.local_epochs_max, "local-epochs-max")
    _at_most(
        "personalize-epochs",
        settings.personalize_epochs,
        limits.personalize_epochs_max,
        "personalize-epochs-max",
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
            f"run setting spacing-mm = {spacing:g} (patch-size {patch}) would resample a case of this site to "
            f"{largest:,} voxels, above the site's limit {limit} = {limits.max_resampled_voxels:,}; use a coarser "
            "spacing-mm or ask the site to raise its limit",
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
