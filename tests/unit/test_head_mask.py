"""The head mask and the z-score over it on skull-stripped brains in noisy air: the mask is the brain, whatever the
scanner's noise and offset, so a tissue gets the same z-score at every site."""

import dataclasses

import numpy as np
import pytest
import torch

from data_prep.intensity import head_mask, zscore_over_head
from data_prep.synth.anatomy import render_anatomy
from data_prep.synth.phantom import sampling_grid
from data_prep.synth.profiles import site_profiles
from data_prep.transforms import PreprocessSettings, intensity_arguments

SETTINGS = PreprocessSettings(spacing_mm=2.0, pad_to=64)


@pytest.fixture(scope="module")
def cases():
    """One anatomy case per site: three scanners' noise (20-32 units SD) and offsets around the same anatomy."""
    drawn = []
    for profile in site_profiles("anatomy", 3, seed=0):
        shape, affine = sampling_grid(profile)
        drawn.append(
            render_anatomy(profile, shape, affine, np.random.default_rng([0, 0, *profile.name.encode()]))
        )
    return drawn


def masks(cases, settings: PreprocessSettings) -> list[np.ndarray]:
    return [head_mask(case.image[None], **intensity_arguments(settings))[0] for case in cases]


def test_the_mask_is_the_brain_not_the_noise_around_it(cases):
    for case, mask in zip(cases, masks(cases, SETTINGS), strict=True):
        assert mask[case.brain].mean() > 0.99
        assert (mask & ~case.brain).sum() < 0.15 * mask.sum()  # a voxel's rim, from the smoothing


def test_unsmoothed_the_noise_joins_the_mask(cases):
    """What the smoothing prevents: at the noisiest site half the unsmoothed mask is air."""
    unsmoothed = masks(cases, dataclasses.replace(SETTINGS, head_smoothing_voxels=0.0))
    assert max((mask & ~case.brain).sum() / mask.sum() for case, mask in zip(cases, unsmoothed)) > 0.3


def test_white_matter_gets_the_same_z_score_at_every_site(cases):
    levels = []
    for case in cases:
        z = zscore_over_head(torch.as_tensor(case.image), **intensity_arguments(SETTINGS)).numpy()
        levels.append(np.median(z[(case.white_matter > 0.9) & (case.label == 0)]))
    assert max(levels) - min(levels) < 0.25, levels


def test_numpy_and_torch_images_give_the_same_mask(cases):
    image = cases[0].image[None]
    from_numpy = head_mask(image, **intensity_arguments(SETTINGS))
    from_torch = head_mask(torch.as_tensor(image), **intensity_arguments(SETTINGS))
    assert isinstance(from_numpy, np.ndarray) and isinstance(from_torch, torch.Tensor)
    np.testing.assert_array_equal(from_numpy, from_torch.numpy())
