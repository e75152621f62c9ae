"""An analytic head phantom with brain tumors (1-2, or the site profile's number), sampled at the RAS mm centre of every
voxel of any grid.

Anatomy is a function of world position only, so grids of any spacing or orientation sample the same head:
head ellipsoid = skull shell + brain, two lateral ventricles (CSF), and tumors whose radius is modulated by a
few low-frequency angular terms. Tumor sub-regions follow the normalised distance rho = distance / radius(direction)
from the tumor centre: necrotic core (label 1) inside, enhancing rim (3) around it, edema (2) out to rho = 1.
Intensities are MR-like per tissue, then per-case texture, the site's bias field, scale, offset and noise.
"""

import math
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from data_prep.synth.profiles import SiteProfile
from data_prep.volume import voxel_centres_mm
from models.shared.labels import BACKGROUND, EDEMA, ENHANCING, NECROTIC_CORE

BRAIN_FRACTION = 0.88
"""Brain = inside this fraction of the head ellipsoid; the shell outside it, up to 1, is skull and scalp."""

FIELD_OF_VIEW_MARGIN = 1.15
"""Field of view = this factor times the head's diameter along each axis, so the whole head is imaged."""

TEXTURE_AMPLITUDE = 0.05
"""Relative amplitude of the per-case tissue texture (sum of three plane waves of 8-20 mm wavelength)."""

TUMOR_LOBES = 3
"""Number of low-frequency angular terms that make each tumor's outline irregular."""

TISSUE_INTENSITY = {"background": 0.0, "skull": 260.0, "brain": 420.0, "csf": 110.0}
"""Base MR-like intensities (arbitrary units) before the site's scale and offset."""

LABEL_INTENSITY = {NECROTIC_CORE: 150.0, EDEMA: 640.0, ENHANCING: 900.0}
"""Tumor intensities: necrosis dark, edema brighter than brain, enhancing rim brightest."""


@dataclass(frozen=True, eq=False)
class Tumor:
    """One tumor: radius(d) = radius_mm * (1 + sum amplitudes * sin(pi * frequencies * (d . lobe_directions) + phases))."""

    centre_mm: np.ndarray  # (3,) RAS mm
    radius_mm: float
    lobe_directions: np.ndarray  # (m, 3) unit vectors
    amplitudes: np.ndarray  # (m,)
    frequencies: np.ndarray  # (m,)
    phases: np.ndarray  # (m,)
    core_rho: float  # rho below which: necrotic core
    rim_rho: float  # rho below which (and above core_rho): enhancing rim


@dataclass(frozen=True, eq=False)
class Phantom:
    """Everything random about one case except the voxel noise. World coordinates in RAS mm."""

    centre_mm: np.ndarray
    semi_axes_mm: np.ndarray  # along R, A, S
    tumors: tuple[Tumor, ...]
    texture_waves: np.ndarray  # (3, 3) wave vectors, rad/mm
    texture_phases: np.ndarray  # (3,)
    bias_direction: np.ndarray  # (3,) unit vector, in head-normalised coordinates
    profile: SiteProfile


def sampling_grid(profile: SiteProfile) -> tuple[tuple[int, int, int], np.ndarray]:
    """``(shape, affine)`` of the site's stored grid: its spacing and orientation, centred on the world origin.

    The grid is symmetric about the origin, so grids that differ only in axis order or direction have the same
    voxel centres.
    """
    fov = 2.0 * FIELD_OF_VIEW_MARGIN * np.asarray(profile.head_semi_axes_mm)
    ornt = nib.orientations.axcodes2ornt(tuple(profile.orientation))
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    shape = []
    for axis, ((world_axis, sign), spacing) in enumerate(zip(ornt, profile.spacing_mm)):
        affine[int(world_axis), axis] = sign * spacing
        shape.append(math.ceil(fov[int(world_axis)] / spacing))
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    return (shape[0], shape[1], shape[2]), affine


def random_phantom(profile: SiteProfile, rng: np.random.Generator) -> Phantom:
    """Draw one case's anatomy and appearance for ``profile`` (head size jitter +/-5 %, the profile's number of
    tumors)."""
    semi_axes = np.asarray(profile.head_semi_axes_mm) * rng.uniform(0.95, 1.05, size=3)
    centre = rng.uniform(-4.0, 4.0, size=3)
    brain_semi = BRAIN_FRACTION * semi_axes
    tumors = []
    fewest, most = profile.tumor_count
    for _ in range(int(rng.integers(fewest, most + 1))):
        radius = float(rng.uniform(*profile.tumor_radius_mm))
        reach = max(0.05, 0.85 - 1.2 * radius / brain_semi.min())  # keep most of the tumor inside the brain
        offset = _unit(rng.normal(size=3)) * reach * rng.uniform(0.0, 1.0) ** (1 / 3)
        core = float(rng.uniform(0.4, 0.55))
        m = TUMOR_LOBES
        tumors.append(
            Tumor(
                centre_mm=centre + offset * brain_semi,
                radius_mm=radius,
                lobe_directions=np.array([_unit(v) for v in rng.normal(size=(m, 3))]),
                amplitudes=rng.uniform(0.04, 0.11, size=m),
                frequencies=rng.integers(1, 4, size=m).astype(float),
                phases=rng.uniform(0, 2 * np.pi, size=m),
                core_rho=core,
                rim_rho=core + float(rng.uniform(0.15, 0.25)),
            )
        )
    wavelengths = rng.uniform(8.0, 20.0, size=3)
    waves = np.array([_unit(v) for v in rng.normal(size=(3, 3))]) * (2 * np.pi / wavelengths)[:, None]
    return Phantom(
        centre_mm=centre,
        semi_axes_mm=semi_axes,
        tumors=tuple(tumors),
        texture_waves=waves,
        texture_phases=rng.uniform(0, 2 * np.pi, size=3),
        bias_direction=_unit(rng.normal(size=3)),
        profile=profile,
    )


def render(
    phantom: Phantom, shape: tuple[int, int, int], affine: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``phantom`` on the grid ``(shape, affine)``: ``(image float32, label uint8)``, both of ``shape``."""
    points = voxel_centres_mm(shape, affine)
    label = _labels(phantom, points)
    intensity = _tissue_intensity(phantom, points, label)
    profile = phantom.profile
    head_coords = (points - _f32(phantom.centre_mm)) / _f32(phantom.semi_axes_mm)
    bias = np.exp(np.float32(profile.bias_strength) * (head_coords @ _f32(phantom.bias_direction)))
    texture = 1 + np.float32(TEXTURE_AMPLITUDE / 3) * np.sin(
        points @ _f32(phantom.texture_waves.T) + _f32(phantom.texture_phases)
    ).sum(axis=-1)
    scale, offset = np.float32(profile.intensity_scale), np.float32(profile.intensity_offset)
    image = intensity * texture * bias * scale + offset
    image += rng.normal(0.0, profile.noise_sd, size=shape).astype(np.float32)
    return image.astype(np.float32), label


def _labels(phantom: Phantom, points: np.ndarray) -> np.ndarray:
    """Tumor labels inside the brain; where tumors overlap, the one whose centre is relatively nearer wins."""
    brain = _ellipsoid_radius(points, phantom.centre_mm, BRAIN_FRACTION * phantom.semi_axes_mm) <= 1
    label = np.full(points.shape[:-1], BACKGROUND, dtype=np.uint8)
    best_rho = np.full(points.shape[:-1], np.inf, dtype=np.float32)
    for tumor in phantom.tumors:
        offset = points - _f32(tumor.centre_mm)
        distance = np.linalg.norm(offset, axis=-1)
        direction = offset / np.maximum(distance, np.float32(1e-6))[..., None]
        angle_terms = np.sin(
            np.float32(np.pi) * _f32(tumor.frequencies) * (direction @ _f32(tumor.lobe_directions.T))
            + _f32(tumor.phases)
        )
        radius = np.float32(tumor.radius_mm) * (1 + angle_terms @ _f32(tumor.amplitudes))
        rho = distance / radius
        inside = brain & (rho <= 1) & (rho < best_rho)
        value = np.where(rho < tumor.core_rho, NECROTIC_CORE, np.where(rho < tumor.rim_rho, ENHANCING, EDEMA))
        label[inside] = value[inside]
        best_rho[inside] = rho[inside]
    return label


def _tissue_intensity(phantom: Phantom, points: np.ndarray, label: np.ndarray) -> np.ndarray:
    head = _ellipsoid_radius(points, phantom.centre_mm, phantom.semi_axes_mm)
    intensity = np.select(
        [head <= BRAIN_FRACTION, head <= 1],
        [TISSUE_INTENSITY["brain"], TISSUE_INTENSITY["skull"]],
        TISSUE_INTENSITY["background"],
    ).astype(np.float32)
    semi = phantom.semi_axes_mm
    for side in (-1, 1):  # lateral ventricles, either side of the midline, slightly anterior and superior
        centre = phantom.centre_mm + semi * np.array([side * 0.13, 0.05, 0.12])
        intensity[_ellipsoid_radius(points, centre, semi * np.array([0.08, 0.30, 0.14])) <= 1] = (
            TISSUE_INTENSITY["csf"]
        )
    brain, contrast = TISSUE_INTENSITY["brain"], phantom.profile.tumor_contrast
    for value, tumor_intensity in LABEL_INTENSITY.items():
        intensity[label == value] = brain + contrast * (tumor_intensity - brain)
    return intensity


def _ellipsoid_radius(points: np.ndarray, centre: np.ndarray, semi_axes: np.ndarray) -> np.ndarray:
    """Normalised ellipsoid radius of each point: < 1 inside, 1 on the surface."""
    return np.linalg.norm((points - _f32(centre)) / _f32(semi_axes), axis=-1)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)
