"""The label convention shared by every site, and the evaluation regions built from it; defined once.

Voxel values in label maps: 0 background, 1 necrotic core (NCR), 2 peritumoral edema (ED),
3 enhancing tumor (ET). Evaluation uses named regions, each the union of some label values: the BraTS regions
(wt, tc, et) or one region per label ("per-class"), chosen by the run setting `eval-regions`.
Region names hold no "-": they sit inside metric keys (models.shared.wire's key grammar).
"""

from collections.abc import Mapping
from types import MappingProxyType

BACKGROUND = 0
NECROTIC_CORE = 1
EDEMA = 2
ENHANCING = 3

LABEL_NAMES = MappingProxyType(
    {BACKGROUND: "background", NECROTIC_CORE: "necrotic core", EDEMA: "edema", ENHANCING: "enhancing tumor"}
)
NUM_CLASSES = len(LABEL_NAMES)

REGIONS: MappingProxyType[str, tuple[int, ...]] = MappingProxyType(
    {
        "wt": (NECROTIC_CORE, EDEMA, ENHANCING),  # whole tumor
        "tc": (NECROTIC_CORE, ENHANCING),  # tumor core
        "et": (ENHANCING,),  # enhancing tumor
    }
)
"""The BraTS evaluation regions: name -> label values whose union forms the region."""

REGION_SETS: Mapping[str, Mapping[str, tuple[int, ...]]] = MappingProxyType(
    {
        "brats": REGIONS,
        "per-class": MappingProxyType(
            {f"label{value}": (value,) for value in LABEL_NAMES if value != BACKGROUND}
        ),
    }
)
"""The values of the run setting `eval-regions` and the regions each one evaluates, in report order."""

REGION_TITLES: Mapping[str, str] = MappingProxyType(
    {
        "wt": "whole tumor",
        "tc": "tumor core",
        "et": "enhancing tumor",
        **{f"label{value}": name for value, name in LABEL_NAMES.items() if value != BACKGROUND},
    }
)
"""A readable title for every region of every region set (for reports)."""


def evaluation_regions(name: str) -> Mapping[str, tuple[int, ...]]:
    """The regions of an `eval-regions` value; an unknown name lists the valid ones."""
    try:
        return REGION_SETS[name]
    except KeyError:
        raise ValueError(f"unknown eval-regions {name!r}; choose one of: {', '.join(REGION_SETS)}") from None
