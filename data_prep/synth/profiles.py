"""How each synthetic hospital differs from the others (non-IID), for three presets.

Sites differ in file format, stored orientation, voxel spacing (including thick slices), number of cases,
tumor size, and scanner appearance (intensity scale/offset, noise, bias field). The second site,
``hospital-b``, exports DICOM (CT series + DICOM-SEG); every other site NIfTI.
"""

from dataclasses import dataclass
from typing import Literal

import nibabel as nib
import numpy as np

PRESETS = ("tiny", "demo", "bench")
"""tiny: seconds, for tests (volumes <= ~40 voxels per axis); demo: realistic heads, 3 sites;
bench: demo-sized heads, 4 sites, more cases."""

MAX_SITES = 26
"""Sites are named hospital-a ... hospital-z."""

_HEAD_SEMI_AXES_MM = {"tiny": (34.0, 40.0, 30.0), "demo": (70.0, 85.0, 65.0), "bench": (70.0, 85.0, 65.0)}
"""Mean head semi-axes along R, A, S in mm; a tiny head is about half a real one."""

_CASES = {"tiny": (6, 5, 4, 4), "demo": (24, 12, 6), "bench": (30, 20, 12, 8)}
"""Cases per site, in site order; sites beyond the list repeat its last value."""

_STYLES = (
    # format, stored orientation, spacing (tiny), spacing (demo/bench), tumor radius range (real-size head)
    ("nifti", "LAS", (2.5, 2.5, 2.5), (1.5, 1.5, 1.5), (10.0, 20.0)),  # radiological-convention NIfTI
    ("dicom", "LPS", (2.5, 2.5, 4.0), (1.0, 1.0, 4.0), (14.0, 26.0)),  # axial DICOM, thick slices
    ("nifti", "RAS", (3.0, 3.0, 3.0), (1.8, 1.8, 1.8), (8.0, 16.0)),
    ("nifti", "PSR", (2.5, 2.5, 3.5), (1.2, 1.2, 2.5), (16.0, 28.0)),  # sagittal slabs
)
"""Site archetypes in site order; after the fourth, the NIfTI ones repeat (only hospital-b is DICOM)."""


@dataclass(frozen=True)
class SiteProfile:
    """Everything that makes one synthetic site's data look the way it does. Lengths in mm."""

    name: str
    n_cases: int
    spacing_mm: tuple[float, float, float]
    """Voxel edges along the stored i, j, k axes."""
    orientation: str
    """Axis codes of the stored i, j, k axes (nibabel's, e.g. "LAS": i runs towards Left). For DICOM,
    "LPS" is a standard axial series, "PIR" sagittal, "LIP" coronal."""
    image_format: Literal["nifti", "dicom"]
    intensity_scale: float
    intensity_offset: float
    noise_sd: float
    """Standard deviation of the additive gaussian noise, in output intensity units."""
    bias_strength: float
    """Log-amplitude of the smooth multiplicative bias field across the head (0 = none, 0.3 = about +/-35 %)."""
    tumor_radius_mm: tuple[float, float]
    head_semi_axes_mm: tuple[float, float, float]
    """Mean head semi-axes along R, A, S; each case varies them a little."""

    def __post_init__(self) -> None:
        ornt = nib.orientations.axcodes2ornt(tuple(self.orientation))  # ValueError for unknown letters
        if len(self.orientation) != 3 or len(set(ornt[:, 0].tolist())) != 3:
            raise ValueError(
                f"orientation must be 3 axis codes along different axes, e.g. 'LPS', not {self.orientation!r}"
            )


def site_profiles(preset: str, n_sites: int, seed: int) -> list[SiteProfile]:
    """The profiles of ``n_sites`` sites for ``preset``; appearance parameters are drawn from ``seed``.

    Raises ValueError for an unknown preset or a site count outside 1..MAX_SITES.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    if not 1 <= n_sites <= MAX_SITES:
        raise ValueError(f"number of sites must be between 1 and {MAX_SITES}, got {n_sites}")
    rng = np.random.default_rng([seed, PRESETS.index(preset)])
    head = _HEAD_SEMI_AXES_MM[preset]
    tumor_scale = head[0] / _HEAD_SEMI_AXES_MM["demo"][0]
    counts = _CASES[preset]
    profiles = []
    for index in range(n_sites):
        style = _STYLES[index] if index < len(_STYLES) else _STYLES[(0, 2, 3)[index % 3]]
        image_format, orientation, tiny_spacing, spacing, radius = style
        profiles.append(
            SiteProfile(
                name=f"hospital-{chr(ord('a') + index)}",
                n_cases=counts[min(index, len(counts) - 1)],
                spacing_mm=tiny_spacing if preset == "tiny" else spacing,
                orientation=orientation,
                image_format=image_format,
                intensity_scale=round(float(rng.uniform(0.6, 1.6)), 3),
                intensity_offset=round(float(rng.uniform(0.0, 120.0)), 1),
                noise_sd=round(float(rng.uniform(10.0, 40.0)), 1),
                bias_strength=round(float(rng.uniform(0.05, 0.35)), 3),
                tumor_radius_mm=(round(radius[0] * tumor_scale, 1), round(radius[1] * tumor_scale, 1)),
                head_semi_axes_mm=head,
            )
        )
    return profiles
