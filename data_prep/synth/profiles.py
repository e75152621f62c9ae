"""How each synthetic hospital differs from the others (non-IID), for five presets.

Sites differ in file format, stored orientation, voxel spacing (including thick slices), number of cases,
tumor size, and scanner appearance (intensity scale/offset, noise, bias field). The second site,
``hospital-b``, exports DICOM (a CT series, an MR series for the anatomy preset, + DICOM-SEG); every other site
NIfTI. The phantom presets draw an analytic head (data_prep.synth.phantom); ``anatomy`` the MNI152 brain with
grown gliomas (data_prep.synth.anatomy), at about 2 mm. ``consortium`` is what real consortia look like: one large
centre and many sites with a handful of cases (40, 16, 8, 5, 4, 3), differing in tumor size, tumor contrast,
noise, slice thickness and orientation, one of them with small multifocal tumors; its DICOM site exports MR.
"""

from dataclasses import dataclass, replace
from typing import Literal

import nibabel as nib
import numpy as np

PRESETS = ("tiny", "demo", "bench", "anatomy", "consortium")
"""tiny: seconds, for tests (volumes <= ~40 voxels per axis); demo: realistic heads, 3 sites;
bench: demo-sized heads, 4 sites, more cases; anatomy: the MNI152 brain, 3 sites of 10 cases at ~2 mm;
consortium: demo-sized heads at 1.5-5 mm (2.5 mm at the large centre), 6 sites of very different sizes (76 cases in all)."""

MAX_SITES = 26
"""Sites are named hospital-a ... hospital-z."""

DEFAULT_SITES = {"tiny": 2, "demo": 3, "bench": 4, "anatomy": 3, "consortium": 6}
"""Sites a preset writes when the number is not given (data_prep/cli.py's help names them too)."""

_HEAD_SEMI_AXES_MM = {
    "tiny": (34.0, 40.0, 30.0),
    "demo": (70.0, 85.0, 65.0),
    "bench": (70.0, 85.0, 65.0),
    "anatomy": (76.0, 94.0, 80.0),
    "consortium": (70.0, 85.0, 65.0),
}
"""Mean head semi-axes along R, A, S in mm; a tiny head is about half a real one. Anatomy: the MNI152 brain's
half bounding box (72, 90, 77) plus room for its pose; only the field of view and the bias field use it."""

_CASES = {"tiny": (6, 5, 4, 4), "demo": (24, 12, 6), "bench": (30, 20, 12, 8), "anatomy": (10,)}
"""Cases per site, in site order; sites beyond the list repeat its last value."""

_STYLES = (
    # format, stored orientation, spacing (tiny), spacing (demo/bench), tumor radius range (real-size head)
    ("nifti", "LAS", (2.5, 2.5, 2.5), (1.5, 1.5, 1.5), (10.0, 20.0)),  # radiological-convention NIfTI
    ("dicom", "LPS", (2.5, 2.5, 4.0), (1.0, 1.0, 4.0), (14.0, 26.0)),  # axial DICOM, thick slices
    ("nifti", "RAS", (3.0, 3.0, 3.0), (1.8, 1.8, 1.8), (8.0, 16.0)),
    ("nifti", "PSR", (2.5, 2.5, 3.5), (1.2, 1.2, 2.5), (16.0, 28.0)),  # sagittal slabs
)
"""Site archetypes in site order; after the fourth, the NIfTI ones repeat (only hospital-b is DICOM)."""

_ANATOMY_STYLES = (
    # spacing, tumor solid-part radius range, bias strength range
    ((2.0, 2.0, 2.0), (8.0, 15.0), (0.3, 0.4)),  # NIfTI LAS with a strong bias field
    ((1.8, 1.8, 2.4), (10.0, 18.0), (0.05, 0.15)),  # DICOM MR, slightly thicker slices
    ((2.2, 2.2, 2.2), (7.0, 13.0), (0.0, 0.05)),  # NIfTI RAS, almost no bias field
    ((2.0, 2.0, 2.6), (9.0, 16.0), (0.1, 0.2)),  # PSR sagittal slabs
)
"""The anatomy preset's spacing (about 2 mm), tumor sizes and bias fields per site archetype, in _STYLES' order."""

_CONSORTIUM_SITES = (
    # cases, format, orientation, spacing, tumor radius, tumors per case, tumor contrast, noise SD, intensity scale
    (40, "nifti", "RAS", (2.5, 2.5, 2.5), (10.0, 20.0), (1, 2), 1.0, 15.0, 1.0),  # the large centre
    (
        16,
        "dicom",
        "LPS",
        (1.5, 1.5, 5.0),
        (14.0, 26.0),
        (1, 2),
        1.25,
        20.0,
        1.3,
    ),  # MR, 5 mm slices, large tumors
    (8, "nifti", "LAS", (3.0, 3.0, 3.0), (10.0, 18.0), (1, 2), 0.6, 35.0, 0.7),  # low contrast, noisy, coarse
    (
        5,
        "nifti",
        "PSR",
        (2.0, 2.0, 4.0),
        (16.0, 28.0),
        (1, 1),
        1.0,
        25.0,
        1.5,
    ),  # sagittal slabs, one large tumor
    (4, "nifti", "LAS", (2.2, 2.2, 3.0), (8.0, 16.0), (1, 2), 0.8, 45.0, 0.9),  # the noisiest scanner
    (3, "nifti", "RAS", (2.0, 2.0, 2.0), (4.0, 8.0), (3, 5), 1.0, 20.0, 1.1),  # small multifocal tumors
)
"""The consortium preset's sites in order (sites beyond the sixth repeat the table); intensity offset and bias
field are drawn from the seed as for the other presets."""


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
    anatomy: Literal["phantom", "mni152"] = "phantom"
    """What a case is drawn from: the analytic head, or the MNI152 brain with grown gliomas."""
    dicom_modality: Literal["CT", "MR"] = "CT"
    """The DICOM series' modality (a DICOM site only)."""
    tumor_count: tuple[int, int] = (1, 2)
    """Fewest and most tumors per case (phantom only), drawn uniformly."""
    tumor_contrast: float = 1.0
    """Tumor intensities' distance from the brain's, as a multiple of the phantom's (phantom only): below 1 the
    tumor is harder to see."""

    def __post_init__(self) -> None:
        ornt = nib.orientations.axcodes2ornt(tuple(self.orientation))  # ValueError for unknown letters
        if len(self.orientation) != 3 or len(set(ornt[:, 0].tolist())) != 3:
            raise ValueError(
                f"orientation must be 3 axis codes along different axes, e.g. 'LPS', not {self.orientation!r}"
            )


def default_sites(preset: str) -> int:
    """How many sites ``preset`` writes by default; ValueError for an unknown preset."""
    _check_preset(preset)
    return DEFAULT_SITES[preset]


def _check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")


def site_profiles(preset: str, n_sites: int, seed: int) -> list[SiteProfile]:
    """The profiles of ``n_sites`` sites for ``preset``; appearance parameters are drawn from ``seed``.

    Raises ValueError for an unknown preset or a site count outside 1..MAX_SITES.
    """
    _check_preset(preset)
    if not 1 <= n_sites <= MAX_SITES:
        raise ValueError(f"number of sites must be between 1 and {MAX_SITES}, got {n_sites}")
    rng = np.random.default_rng([seed, PRESETS.index(preset)])
    if preset == "consortium":
        return [_consortium_site(index, rng) for index in range(n_sites)]
    head = _HEAD_SEMI_AXES_MM[preset]
    tumor_scale = head[0] / _HEAD_SEMI_AXES_MM["demo"][0]
    counts = _CASES[preset]
    profiles = []
    for index in range(n_sites):
        archetype = index if index < len(_STYLES) else (0, 2, 3)[index % 3]
        image_format, orientation, tiny_spacing, spacing, radius = _STYLES[archetype]
        profile = SiteProfile(
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
        profiles.append(_anatomy(profile, archetype, rng) if preset == "anatomy" else profile)
    return profiles


def _anatomy(profile: SiteProfile, archetype: int, rng: np.random.Generator) -> SiteProfile:
    """``profile`` as an anatomy site: MNI152 cases, the archetype's spacing, tumor sizes and bias, DICOM as MR."""
    spacing, radius, bias = _ANATOMY_STYLES[archetype]
    return replace(
        profile,
        spacing_mm=spacing,
        tumor_radius_mm=radius,
        bias_strength=round(float(rng.uniform(*bias)), 3),
        anatomy="mni152",
        dicom_modality="MR",
    )


def _consortium_site(index: int, rng: np.random.Generator) -> SiteProfile:
    """Site ``index`` of the consortium preset (_CONSORTIUM_SITES); offset and bias field drawn from ``rng``."""
    cases, image_format, orientation, spacing, radius, count, contrast, noise, scale = _CONSORTIUM_SITES[
        index % len(_CONSORTIUM_SITES)
    ]
    return SiteProfile(
        name=f"hospital-{chr(ord('a') + index)}",
        n_cases=cases,
        spacing_mm=spacing,
        orientation=orientation,
        image_format=image_format,
        intensity_scale=scale,
        intensity_offset=round(float(rng.uniform(0.0, 120.0)), 1),
        noise_sd=noise,
        bias_strength=round(float(rng.uniform(0.05, 0.35)), 3),
        tumor_radius_mm=radius,
        head_semi_axes_mm=_HEAD_SEMI_AXES_MM["consortium"],
        dicom_modality="MR",
        tumor_count=count,
        tumor_contrast=contrast,
    )
