"""Our glioma model, grown on the 1 mm MNI152 grid: mass effect, necrotic core, enhancing rim, white-matter edema.

A tumor is drawn around a centre in deep white matter. Its solid part is an irregular ball (radius modulated by a
few low-frequency angular terms, as in the phantom): necrotic core (label 1) inside ``core_fraction`` of the radius,
enhancing rim (3) out to the radius. The solid part pushes the tissue around it outward (tissue at distance s from
the centre moves to (s³ + a³)^(1/3), a = ``mass_fraction`` x radius: volume is conserved outside the tumor).
Edema (2) then spreads from the solid part through white matter only (geodesic dilation inside the pushed
white-matter map, whose threshold varies smoothly in space), plus a thin shell in any brain tissue, so it is
finger-like along the tracts and spares the cortex. Labels follow the BraTS convention (models.shared.labels).

Intensities are in white-matter units (template T1 / WHITE_MATTER_T1): necrosis dark, edema brighter than white
matter, enhancing rim brightest; each tumor draws its own levels.
"""

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import ndimage

from data_prep.synth.template import Template
from models.shared.labels import BACKGROUND, EDEMA, ENHANCING, NECROTIC_CORE

DEEP_WHITE_MATTER = 0.9
"""Tumor centres lie where the white-matter probability is above this..."""

CENTRE_DEPTH_MM = 18.0
"""... and at least this far inside the brain."""

SHELL_MM = 2.0
"""Edema always covers this shell around the solid part, whatever the tissue."""

LOBES = 3
"""Angular terms that make the solid part irregular."""


@dataclass(frozen=True, eq=False)
class GliomaSpec:
    """One tumor, in template (MNI) space. Lengths in mm."""

    centre_mm: np.ndarray  # (3,) RAS
    radius_mm: float  # of the solid part (core + rim)
    core_fraction: float  # necrotic core inside this fraction of the radius
    mass_fraction: float  # radius of the displaced volume / radius
    edema_mm: float  # how far edema spreads along white matter from the solid part
    white_matter_threshold: float  # mean white-matter probability edema needs
    lobe_directions: np.ndarray  # (LOBES, 3) unit vectors
    amplitudes: np.ndarray  # (LOBES,)
    frequencies: np.ndarray  # (LOBES,)
    phases: np.ndarray  # (LOBES,)
    levels: tuple[float, float, float]  # necrosis, edema, enhancing intensity in white-matter units


def draw_gliomas(
    template: Template, rng: np.random.Generator, radius_mm: tuple[float, float], count: int
) -> list[GliomaSpec]:
    """``count`` tumors whose solid parts do not overlap, centred in deep white matter."""
    candidates = _deep_white_matter_mm(template)
    specs: list[GliomaSpec] = []
    for _ in range(count):
        radius = float(rng.uniform(*radius_mm))
        edema = float(rng.uniform(6.0, 18.0))
        for _attempt in range(50):
            centre = candidates[int(rng.integers(len(candidates)))] + rng.uniform(-1.0, 1.0, size=3)
            if all(np.linalg.norm(centre - s.centre_mm) > radius + s.radius_mm + 8.0 for s in specs):
                break
        directions = rng.normal(size=(LOBES, 3))
        specs.append(
            GliomaSpec(
                centre_mm=centre,
                radius_mm=radius,
                core_fraction=float(rng.uniform(0.45, 0.75)),
                mass_fraction=float(rng.uniform(0.5, 0.8)),
                edema_mm=edema,
                white_matter_threshold=float(rng.uniform(0.35, 0.6)),
                lobe_directions=directions / np.linalg.norm(directions, axis=1, keepdims=True),
                amplitudes=rng.uniform(0.05, 0.15, size=LOBES),
                frequencies=rng.integers(1, 4, size=LOBES).astype(float),
                phases=rng.uniform(0, 2 * np.pi, size=LOBES),
                levels=(
                    float(rng.uniform(0.25, 0.45)),
                    float(rng.uniform(1.2, 1.4)),
                    float(rng.uniform(1.6, 1.9)),
                ),
            )
        )
    return specs


@dataclass(eq=False)
class Tissue:
    """Mutable copies of the template's arrays for one case (1 mm grid, indexed i, j, k) and its labels so far."""

    t1: np.ndarray  # float32, white-matter units
    white_matter: np.ndarray  # float32 probability
    brain: np.ndarray  # bool
    label: np.ndarray  # uint8, BraTS labels

    @classmethod
    def of(cls, template: Template) -> "Tissue":
        return cls(
            t1=template.t1.copy(),
            white_matter=template.white_matter.copy(),
            brain=template.brain.copy(),
            label=np.zeros(template.t1.shape, dtype=np.uint8),
        )


def grow(tissue: Tissue, affine: np.ndarray, spec: GliomaSpec, rng: np.random.Generator) -> None:
    """Grow ``spec`` into ``tissue`` in place: push the tissue (and earlier tumors' labels) aside, then write this
    tumor's labels (its solid part over earlier edema) and intensities.

    ``affine`` (voxel -> RAS mm) must be isotropic and axis-aligned with positive directions, as the template's is.
    """
    spacing = float(affine[0, 0])
    if spacing <= 0 or not np.allclose(affine[:3, :3], np.eye(3) * spacing):
        raise ValueError("grow needs an isotropic RAS grid without rotation")
    reach = spec.radius_mm * 1.6 + spec.edema_mm + SHELL_MM + 6.0
    centre_voxel = (spec.centre_mm - affine[:3, 3]) / spacing
    low = np.maximum(np.floor(centre_voxel - reach / spacing).astype(int), 0)
    high = np.minimum(np.ceil(centre_voxel + reach / spacing).astype(int) + 1, tissue.t1.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    index = np.stack(np.meshgrid(*(np.arange(a, b) for a, b in zip(low, high)), indexing="ij"), axis=-1)
    offset = (index * spacing + affine[:3, 3] - spec.centre_mm).astype(np.float32)  # mm from the centre
    distance = np.linalg.norm(offset, axis=-1)
    direction = offset / np.maximum(distance, 1e-6)[..., None]

    # mass effect: what lies at distance r now came from (r³ - a³)^(1/3)
    mass = spec.mass_fraction * spec.radius_mm
    source = np.cbrt(np.maximum(distance**3 - mass**3, 0.0))
    coords = np.moveaxis((spec.centre_mm + direction * source[..., None] - affine[:3, 3]) / spacing, -1, 0)
    for name in ("t1", "white_matter"):
        array = getattr(tissue, name)
        array[box] = ndimage.map_coordinates(array, coords, order=1, mode="nearest")
    inside_brain = ndimage.map_coordinates(tissue.brain.astype(np.float32), coords, order=1) > 0.5
    tissue.brain[box] = inside_brain
    earlier = ndimage.map_coordinates(tissue.label, coords, order=0, mode="nearest")

    # the solid part: an irregular ball
    angle = np.sin(np.pi * spec.frequencies * (direction @ spec.lobe_directions.T) + spec.phases)
    rho = distance / (spec.radius_mm * (1 + angle @ spec.amplitudes))
    solid = (rho <= 1.0) & inside_brain
    core = solid & (rho < spec.core_fraction)

    # edema: a thin shell anywhere in the brain, then geodesic growth through white matter
    shell = ndimage.binary_dilation(solid, iterations=max(1, round(SHELL_MM / spacing))) & inside_brain
    threshold = spec.white_matter_threshold + 0.25 * _smooth_noise(rng, solid.shape, 4.0 / spacing)
    allowed = (tissue.white_matter[box] > threshold) & inside_brain
    edema = ndimage.binary_dilation(
        shell, mask=allowed | shell, iterations=max(1, round(spec.edema_mm / spacing))
    )

    own = np.full(solid.shape, BACKGROUND, dtype=np.uint8)
    own[edema & ~solid] = EDEMA
    own[solid] = ENHANCING
    own[core] = NECROTIC_CORE
    tissue.t1[box] = _tumor_intensity(tissue.t1[box], own, spec, rng, spacing)
    tissue.label[box] = np.where(solid | ((own == EDEMA) & (earlier == BACKGROUND)), own, earlier)


def _tumor_intensity(
    t1: np.ndarray, label: np.ndarray, spec: GliomaSpec, rng: np.random.Generator, spacing: float
) -> np.ndarray:
    """Blend each sub-region's level (with a little texture) into ``t1`` through a mask blurred by 1 mm, so tumor
    edges are as soft as tissue edges."""
    out = t1.copy()
    texture = 1.0 + 0.06 * _smooth_noise(rng, label.shape, 2.0 / spacing)
    for value, level in zip((NECROTIC_CORE, EDEMA, ENHANCING), spec.levels, strict=True):
        weight = ndimage.gaussian_filter((label == value).astype(np.float32), 1.0 / spacing)
        if value == EDEMA:
            target = np.maximum(t1, np.float32(level)) * texture  # edema brightens whatever it infiltrates
        else:
            target = np.float32(level) * texture
        out = out * (1 - weight) + target * weight
    return out.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_voxels: float) -> np.ndarray:
    """Gaussian noise smoothed by ``sigma_voxels`` and rescaled to unit SD: a smooth random field."""
    field = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma_voxels)
    return field / max(float(field.std()), 1e-6)


@cache
def _deep_white_matter_mm(template: Template) -> np.ndarray:
    """RAS mm of template voxels (every other one along each axis) that may hold a tumor centre (computed once
    per template)."""
    step = 2
    brain = template.brain[::step, ::step, ::step]
    depth = ndimage.distance_transform_edt(brain) * step
    deep = (template.white_matter[::step, ::step, ::step] > DEEP_WHITE_MATTER) & (depth > CENTRE_DEPTH_MM)
    voxels = np.argwhere(deep) * step
    return voxels @ template.affine[:3, :3].T + template.affine[:3, 3]
