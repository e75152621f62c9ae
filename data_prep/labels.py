"""The label convention shared by every site, defined once.

Voxel values in label maps: 0 background, 1 necrotic core (NCR), 2 peritumoral edema (ED),
3 enhancing tumor (ET). Evaluation uses the BraTS regions built from them.
"""

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
"""Evaluation regions: name -> label values whose union forms the region."""
