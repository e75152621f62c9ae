"""A 3-D array with its geometry: the one in-memory form every reader returns.

Convention: ``array[i, j, k]`` is the voxel whose centre lies at ``affine @ (i, j, k, 1)`` in RAS millimetres
(+x towards the patient's Right, +y Anterior, +z Superior), which is nibabel's convention. DICOM's LPS is
converted once, by the DICOM reader.
"""

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from data_prep.errors import CaseError

ORTHOGONALITY_TOLERANCE = 1e-3
"""Largest |cosine| allowed between two affine axes (1e-3 is about 0.06 degrees); larger means sheared."""

MIN_SPACING_MM = 1e-3
"""Smallest voxel edge accepted, in mm; anything shorter means a singular (degenerate) affine."""

GRID_TOLERANCE_MM = 1e-2
"""Largest distance, in mm, between corresponding voxel centres of two volumes said to share a grid (exporters
round positions to a few decimals; a hundredth of a millimetre is far below any voxel)."""


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D array indexed (i, j, k) and the 4x4 float64 affine mapping voxel index to RAS mm."""

    array: np.ndarray
    affine: np.ndarray

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel edge lengths along i, j, k, in mm."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def ras_shape(self) -> tuple[int, int, int]:
        """Array shape along the axes nearest to R, A, S (what the shape is after reorienting to RAS)."""
        return tuple(int(n) for n in _to_ras_order(self.affine, self.array.shape))

    @property
    def ras_spacing_mm(self) -> tuple[float, float, float]:
        """``spacing_mm`` along the axes nearest to R, A, S."""
        return tuple(float(s) for s in _to_ras_order(self.affine, self.spacing_mm))

    @property
    def orientation(self) -> str:
        """Axis codes of i, j, k, e.g. "LPS": i runs towards Left, j towards Posterior, k towards Superior."""
        return "".join(nib.aff2axcodes(self.affine))

    def __repr__(self) -> str:
        spacing = "x".join(f"{s:.3g}" for s in self.spacing_mm)
        return f"Volume(shape={self.array.shape}, dtype={self.array.dtype}, spacing_mm={spacing}, {self.orientation})"


def check_voxel_limit(shape: tuple[int, ...], max_voxels: int, source: Path | str) -> None:
    """Refuse a volume from its header alone (before any voxel is read) when it has more than ``max_voxels``."""
    n_voxels = int(np.prod([int(n) for n in shape], dtype=object))
    if n_voxels > max_voxels:
        size = "x".join(str(int(n)) for n in shape)
        raise CaseError(
            f"{source}: volume of {size} = {n_voxels:,} voxels exceeds the site's limit of {max_voxels:,} voxels"
            " (max-voxels in site.toml); not loaded"
        )


def _to_ras_order(affine: np.ndarray, values) -> list:
    """Reorder per-axis ``values`` (i, j, k) to the world axes R, A, S that each voxel axis is closest to."""
    ornt = nib.orientations.io_orientation(affine)
    ras = [None, None, None]
    for axis, (world_axis, _) in enumerate(ornt):
        ras[int(world_axis)] = values[axis]
    return ras


def checked_affine(affine: np.ndarray, source: Path | str) -> np.ndarray:
    """Return ``affine`` as float64 4x4 after checking it is a finite, non-singular, orthogonal voxel->mm map.

    Raises CaseError naming ``source`` (the file or folder it came from) and the values found.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise CaseError(f"{source}: affine must be a finite 4x4 matrix, found {affine.tolist()}")
    if not np.allclose(affine[3], [0, 0, 0, 1]):
        raise CaseError(f"{source}: last affine row must be [0, 0, 0, 1], found {affine[3].tolist()}")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing < MIN_SPACING_MM):
        raise CaseError(f"{source}: singular affine, voxel spacing {spacing.round(6).tolist()} mm")
    directions = affine[:3, :3] / spacing
    cosines = np.abs(directions.T @ directions - np.eye(3))
    if cosines.max() > ORTHOGONALITY_TOLERANCE:
        raise CaseError(
            f"{source}: voxel axes are not orthogonal (largest |cosine| between axes {cosines.max():.4g},"
            f" tolerance {ORTHOGONALITY_TOLERANCE}); sheared or gantry-tilted grids are not supported"
        )
    return affine


def on_grid_of(
    moving: Volume, reference: Volume, moving_source: Path | str, reference_source: Path | str
) -> Volume:
    """``moving`` re-indexed onto ``reference``'s grid: the one rule for "these two volumes share a grid".

    Two grids share their voxel centres when one is the other with its axes permuted and/or reversed (a label saved
    in RAS order for a series stored LPS, a prediction written back onto a PSR-stored image): the voxels are then
    re-indexed, never interpolated, and the result carries ``reference``'s affine. Every voxel centre must agree
    within GRID_TOLERANCE_MM; an affine map's largest difference over a box lies at a corner, so the 8 corners
    are checked. Raises CaseError naming both sources when the grids differ in size, spacing, origin or rotation.
    """
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(moving.affine), nib.orientations.io_orientation(reference.affine)
    )
    array = nib.orientations.apply_orientation(moving.array, transform)
    affine = moving.affine @ nib.orientations.inv_ornt_aff(transform, moving.array.shape)
    if array.shape != reference.array.shape:
        reordered = (
            f" ({array.shape} in the axis order of {reference_source})"
            if array.shape != moving.array.shape
            else ""
        )
        raise CaseError(
            f"{reference_source} has shape {reference.array.shape} but {moving_source} has shape"
            f" {moving.array.shape}{reordered}; an image and its label must share one grid"
        )
    corners = np.array(
        [
            [i, j, k, 1]
            for i in (0, array.shape[0] - 1)
            for j in (0, array.shape[1] - 1)
            for k in (0, array.shape[2] - 1)
        ],
        dtype=np.float64,
    ).T
    deviation = float(np.linalg.norm((affine - reference.affine)[:3] @ corners, axis=0).max())
    if deviation > GRID_TOLERANCE_MM:
        raise CaseError(
            f"{reference_source} and {moving_source} lie on different grids: voxel centres differ by up to"
            f" {deviation:.4g} mm (tolerance {GRID_TOLERANCE_MM} mm, in any axis order); affines"
            f" {reference.affine.round(4).tolist()} vs {moving.affine.round(4).tolist()}; the label must be saved"
            " on the image's grid"
        )
    return Volume(array=np.ascontiguousarray(array), affine=reference.affine)


def voxel_centres_mm(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """RAS mm coordinates of every voxel centre of a grid, shape ``(*shape, 3)``, float32."""
    index = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = affine[:3, :3].astype(np.float32) @ index + affine[:3, 3:4].astype(np.float32)
    return world.T.reshape(*shape, 3)
