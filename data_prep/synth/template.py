"""The MNI152 (ICBM 2009a, symmetric) brain that nilearn ships inside its wheel: T1 and white-matter map.

Only the files are used, found through the installed package's location and read with nibabel: nilearn itself is
never imported (its import pulls in pandas, sklearn and joblib) and nothing is downloaded. The template is
skull-stripped, on a 1 mm RAS grid of 197 x 233 x 189 voxels; intensities are uint8 (T1: 0-255, white matter:
probability x 255).
"""

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
"""The template files under nilearn/datasets/data/."""

WHITE_MATTER_T1 = 225.0
"""Template T1 value of white matter (its 95th percentile inside the brain); the image's intensity unit."""

BRAIN_T1_THRESHOLD = 10.0
"""Template T1 above this (after filling holes) is brain; the template is zero outside it."""


class TemplateMissing(RuntimeError):
    """nilearn (or one of its template files) is not installed; the message says what to install."""


@dataclass(frozen=True, eq=False)
class Template:
    """The template on its 1 mm grid: arrays indexed (i, j, k), ``affine`` voxel -> RAS mm (MNI space)."""

    t1: np.ndarray
    """float32, white matter = 1."""
    white_matter: np.ndarray
    """float32 probability 0-1."""
    brain: np.ndarray
    """bool, inside the brain (holes such as the ventricles filled)."""
    affine: np.ndarray
    centre_mm: np.ndarray
    """(3,) RAS mm: centre of the brain's bounding box."""
    semi_axes_mm: np.ndarray
    """(3,) half the brain's bounding-box edges along R, A, S."""


def template_folder() -> Path:
    """nilearn/datasets/data of the installed nilearn, located without importing nilearn."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise TemplateMissing(
            "the anatomy preset needs the MNI152 template shipped with nilearn; install oncofed's dependencies"
            " (nilearn>=0.11,<0.14)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


@cache
def load_template() -> Template:
    """Read and prepare the template once per process (about 0.3 s)."""
    folder = template_folder()
    arrays = {}
    affine = None
    for key, name in TEMPLATE_FILES.items():
        path = folder / name
        if not path.is_file():
            raise TemplateMissing(
                f"{path} is missing: the installed nilearn does not ship the MNI152 template"
            )
        image = nib.load(path)
        arrays[key] = np.asarray(image.dataobj, dtype=np.float32)
        affine = image.affine if affine is None else affine
        if not np.allclose(image.affine, affine):
            raise TemplateMissing(f"{path} is not on the grid of {TEMPLATE_FILES['t1']}")
    brain = ndimage.binary_fill_holes(arrays["t1"] > BRAIN_T1_THRESHOLD)
    corners = np.argwhere(brain)
    low, high = corners.min(axis=0), corners.max(axis=0)
    low_mm, high_mm = (nib.affines.apply_affine(affine, v) for v in (low, high))
    return Template(
        t1=arrays["t1"] / np.float32(WHITE_MATTER_T1),
        white_matter=arrays["wm"] / np.float32(255.0),
        brain=brain,
        affine=np.asarray(affine, dtype=np.float64),
        centre_mm=(low_mm + high_mm) / 2.0,
        semi_axes_mm=np.abs(high_mm - low_mm) / 2.0,
    )
