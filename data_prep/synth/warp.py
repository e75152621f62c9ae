"""Where each voxel of a case's grid comes from in the template: pose (rotation, translation), size and a smooth
random deformation, drawn per case.

World (RAS mm, the case's scanner space) -> template (MNI mm):
    u = Rᵀ (p - t)                  undo the pose: the brain's centre is at t, its axes rotated by R
    v = u / scale                   undo the per-axis size change
    m = v + d(v) + template centre  undo the deformation d, a smooth random field (gaussian-filtered noise on a
                                    4 mm lattice, interpolated trilinearly)
Sampling the template at m(p) for every voxel centre p gives the warped, posed brain on the case's grid.
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

LATTICE_SPACING_MM = 4.0
"""Spacing of the lattice the deformation is drawn on."""

SMOOTHNESS_MM = 12.0
"""Gaussian filter width (SD) of the deformation: it varies over a few centimetres."""

LATTICE_MARGIN_MM = 24.0
"""The lattice reaches this far beyond the brain's box, so the pose's rotation keeps the brain on it."""


@dataclass(frozen=True, eq=False)
class Warp:
    """One case's pose, size and deformation. Lengths in mm; ``displacements_mm`` is (3, nx, ny, nz) on a lattice
    of LATTICE_SPACING_MM."""

    rotation: np.ndarray  # (3, 3)
    translation_mm: np.ndarray  # (3,)
    scale: np.ndarray  # (3,) along the template's R, A, S
    displacements_mm: np.ndarray
    lattice_origin_mm: np.ndarray  # (3,) v of lattice point (0, 0, 0)
    template_centre_mm: np.ndarray  # (3,)


def random_warp(
    rng: np.random.Generator,
    template_centre_mm: np.ndarray,
    template_semi_axes_mm: np.ndarray,
    *,
    rotation_deg: float = 10.0,
    translation_mm: float = 6.0,
    scale_range: tuple[float, float] = (0.92, 1.08),
    displacement_sd_mm: float = 3.0,
) -> Warp:
    """Draw a warp: rotation up to ``rotation_deg`` about each axis, translation up to ``translation_mm`` along each,
    size factors in ``scale_range`` per axis, displacements with SD ``displacement_sd_mm`` along each axis."""
    angles = rng.uniform(-rotation_deg, rotation_deg, size=3)
    extent = 2 * (np.asarray(template_semi_axes_mm) + LATTICE_MARGIN_MM)
    counts = np.ceil(extent / LATTICE_SPACING_MM).astype(int) + 1
    origin = -(counts - 1) / 2.0 * LATTICE_SPACING_MM
    noise = rng.normal(size=(3, *counts)).astype(np.float32)
    field = np.stack([ndimage.gaussian_filter(c, SMOOTHNESS_MM / LATTICE_SPACING_MM) for c in noise])
    field *= np.float32(displacement_sd_mm) / field.std(axis=(1, 2, 3), keepdims=True)
    return Warp(
        rotation=Rotation.from_euler("xyz", angles, degrees=True).as_matrix(),
        translation_mm=rng.uniform(-translation_mm, translation_mm, size=3),
        scale=rng.uniform(*scale_range, size=3),
        displacements_mm=field,
        lattice_origin_mm=origin,
        template_centre_mm=np.asarray(template_centre_mm, dtype=np.float64),
    )


def template_positions(warp: Warp, points_mm: np.ndarray) -> np.ndarray:
    """Template (MNI) mm of each world point; ``points_mm`` is (..., 3) RAS mm, the result has its shape."""
    shape = points_mm.shape
    flat = points_mm.reshape(-1, 3).astype(np.float64)
    v = ((flat - warp.translation_mm) @ warp.rotation) / warp.scale  # Rᵀ (p - t), row-wise
    lattice = ((v - warp.lattice_origin_mm) / LATTICE_SPACING_MM).T
    displacement = np.stack(
        [ndimage.map_coordinates(c, lattice, order=1, mode="nearest") for c in warp.displacements_mm], axis=-1
    )
    return (v + displacement + warp.template_centre_mm).reshape(shape)
