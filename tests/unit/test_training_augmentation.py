"""The training tail's scanner-appearance augmentation: patches get other scanners' noise and contrast, labels stay."""

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from data_prep.transforms import scanner_appearance_augmentation

DRAWS = 200


def _patch() -> dict[str, MetaTensor]:
    """A z-scored 16³ patch: brain at -1, a tumour cube at +2 (label 2), no noise."""
    image = torch.full((1, 16, 16, 16), -1.0)
    label = torch.zeros((1, 16, 16, 16), dtype=torch.uint8)
    image[:, 4:12, 4:12, 4:12] = 2.0
    label[:, 4:12, 4:12, 4:12] = 2
    return {"image": MetaTensor(image), "label": MetaTensor(label)}


def _draws() -> list[dict[str, MetaTensor]]:
    augment = Compose(scanner_appearance_augmentation())
    augment.set_random_state(seed=0)
    return [augment(_patch()) for _ in range(DRAWS)]


def _contrast_and_noise(item: dict[str, MetaTensor]) -> tuple[float, float]:
    """Tumour mean minus brain mean, over the original 3.0; the brain's SD (the patch had none)."""
    image, tumour = item["image"].numpy()[0], item["label"].numpy()[0] == 2
    return float(image[tumour].mean() - image[~tumour].mean()) / 3.0, float(image[~tumour].std())


def test_some_patches_look_like_a_noisy_low_contrast_scanner_and_labels_never_change():
    draws = _draws()
    measured = np.array([_contrast_and_noise(item) for item in draws])
    contrast, noise = measured[:, 0], measured[:, 1]
    assert all(torch.equal(item["label"], _patch()["label"]) for item in draws)
    # the consortium's low-contrast site has 0.6 x the large centre's contrast and twice its noise (~0.3 z units)
    assert contrast.min() < 0.75 and contrast.max() > 1.2
    assert (noise > 0.15).sum() >= 5
    # most patches keep their own scanner's look: augmentation widens the range, it does not replace it
    assert np.median(np.abs(contrast - 1.0)) < 0.1 and np.median(noise) < 0.01


def test_the_draws_repeat_with_the_seed():
    first, second = _draws()[:20], _draws()[:20]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(first, second, strict=True))
