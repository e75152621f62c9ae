"""Cases built on real anatomy: the MNI152 brain with our gliomas grown into it, warped and posed per case, sampled
on the site's grid and given the site's scanner appearance.

Per case: 1-2 tumors grown on the template's 1 mm grid (data_prep.synth.tumor_growth), a random pose, size and
smooth deformation (data_prep.synth.warp), then trilinear sampling of the image and nearest-neighbour sampling of
the labels at the RAS mm centre of every voxel of the site's stored grid (data_prep.synth.phantom.sampling_grid,
so any spacing or orientation samples the same brain). The brain is skull-stripped, as in BraTS: outside it the
image is the site's offset plus noise. Appearance: per-case texture, the site's bias field, intensity scale and
offset, and noise, as for the phantom.
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from data_prep.synth.profiles import SiteProfile
from data_prep.synth.template import load_template
from data_prep.synth.tumor_growth import Tissue, draw_gliomas, grow
from data_prep.synth.warp import random_warp, template_positions
from data_prep.volume import voxel_centres_mm

WHITE_MATTER_INTENSITY = 420.0
"""White matter's MR-like intensity (arbitrary units) before the site's scale and offset; as the phantom's brain."""

TEXTURE_AMPLITUDE = 0.04
"""Relative amplitude of the per-case tissue texture (three plane waves of 8-20 mm wavelength)."""


@dataclass(frozen=True, eq=False)
class AnatomySample:
    """One case on a grid, every array of the grid's shape: what is written, and the anatomy it was drawn from."""

    image: np.ndarray  # float32, the site's intensity units
    label: np.ndarray  # uint8, BraTS labels
    brain: np.ndarray  # bool, inside the (warped, tumor-displaced) brain
    white_matter: np.ndarray  # float32 probability, after the tumors' mass effect


def render_anatomy(
    profile: SiteProfile, shape: tuple[int, int, int], affine: np.ndarray, rng: np.random.Generator
) -> AnatomySample:
    """One case on the grid ``(shape, affine)``; every random draw comes from ``rng``."""
    template = load_template()
    tissue = Tissue.of(template)
    for spec in draw_gliomas(template, rng, profile.tumor_radius_mm, count=int(rng.integers(1, 3))):
        grow(tissue, template.affine, spec, rng)
    warp = random_warp(rng, template.centre_mm, template.semi_axes_mm)

    points = voxel_centres_mm(shape, affine)
    positions = template_positions(warp, points)
    voxel = np.moveaxis((positions - template.affine[:3, 3]) / np.diag(template.affine)[:3], -1, 0)
    t1 = ndimage.map_coordinates(tissue.t1, voxel, order=1, mode="constant", cval=0.0)
    brain = ndimage.map_coordinates(tissue.brain.astype(np.float32), voxel, order=1, cval=0.0) > 0.5
    label = np.where(brain, ndimage.map_coordinates(tissue.label, voxel, order=0, cval=0), 0).astype(np.uint8)
    white_matter = ndimage.map_coordinates(tissue.white_matter, voxel, order=1, cval=0.0)

    relative = (points - warp.translation_mm.astype(np.float32)) / np.asarray(
        profile.head_semi_axes_mm, dtype=np.float32
    )
    bias = np.exp(np.float32(profile.bias_strength) * (relative @ _unit(rng.normal(size=3))))
    wavelengths = rng.uniform(8.0, 20.0, size=3)
    waves = np.array([_unit(v) for v in rng.normal(size=(3, 3))]) * (2 * np.pi / wavelengths)[:, None]
    texture = 1 + np.float32(TEXTURE_AMPLITUDE / 3) * np.sin(
        points @ waves.T.astype(np.float32) + rng.uniform(0, 2 * np.pi, size=3).astype(np.float32)
    ).sum(axis=-1)
    image = np.float32(WHITE_MATTER_INTENSITY) * t1 * texture * bias
    image = image * np.float32(profile.intensity_scale) + np.float32(profile.intensity_offset)
    image += rng.normal(0.0, profile.noise_sd, size=shape).astype(np.float32)
    return AnatomySample(image=image.astype(np.float32), label=label, brain=brain, white_matter=white_matter)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)
