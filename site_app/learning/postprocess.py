"""Optional post-processing of a prediction before it is measured (run config `min-lesion-mm3`).

Connected components of the predicted tumor (labels 1–3 together, 26-connectivity: the lesion definition of
site_app.learning.metrics) smaller than the minimum volume are set to background. Components are taken over the whole
tumor, not per label, so a small patch of one label inside a larger tumor is kept (no holes are punched); what
goes are isolated specks. scipy.ndimage is used (as for lesion counting) rather than MONAI's RemoveSmallObjects,
which would add scikit-image to the site's dependencies for the same operation.
"""

import math

import numpy as np
from scipy import ndimage

from site_app.learning.metrics import LESION_CONNECTIVITY


def remove_small_lesions(prediction: np.ndarray, spacing_mm: tuple[float, ...], min_mm3: float) -> np.ndarray:
    """(X, Y, Z) label map → the same with tumor components below `min_mm3` (mm³) set to 0; 0 keeps all."""
    if min_mm3 <= 0:
        return prediction
    components, count = ndimage.label(prediction > 0, structure=LESION_CONNECTIVITY)
    if count == 0:
        return prediction
    sizes_mm3 = np.bincount(components.ravel()) * math.prod(spacing_mm)
    small = sizes_mm3 < min_mm3
    small[0] = False
    cleaned = prediction.copy()
    cleaned[small[components]] = 0
    return cleaned
