"""How label values are coded in the DICOM-SEGs we write (synthetic exports and predictions): SNOMED CT codes.

Segment property category: SCT 49755003 "Morphologically abnormal structure". Property type per label value:
1 necrotic core -> SCT 6574001 "Necrosis", 2 edema -> SCT 79654002 "Edema", 3 enhancing tumor -> SCT 108369006
"Neoplasm" (SNOMED CT has no concept for the enhancing part alone; the segment label says "enhancing tumor").
Anatomic region: SCT 12738006 "Brain".
"""

from types import MappingProxyType

from pydicom.sr.codedict import codes

from models.shared.labels import EDEMA, ENHANCING, NECROTIC_CORE

SEGMENT_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure

SEGMENT_TYPES = MappingProxyType(
    {NECROTIC_CORE: codes.SCT.Necrosis, EDEMA: codes.SCT.Edema, ENHANCING: codes.SCT.Neoplasm}
)
"""Label value -> SNOMED CT segmented property type."""

ANATOMIC_REGION = codes.SCT.Brain
