"""Local training is repeatable from its seed, and FedProx's proximal term does exactly what it claims."""

import pytest
import torch
from monai.data import Dataset

from models.presets import build_model
from site_app.learning.training import round_seed, seed_everything, train_epochs


def patches(n: int = 6) -> Dataset:
    """Random 16³ images with a bright cube labelled 3 inside a region labelled 2."""
    generator = torch.Generator().manual_seed(7)
    items = []
    for _ in range(n):
        image = torch.randn(1, 16, 16, 16, generator=generator)
        label = torch.zeros(1, 16, 16, 16, dtype=torch.uint8)
        label[:, 4:12, 4:12, 4:12] = 2
        label[:, 6:10, 6:10, 6:10] = 3
        image[label > 0] += 2.0
        items.append({"image": image, "label": label})
    return Dataset(items)


def trained(seed: int, proximal_mu: float | None, data: Dataset) -> dict[str, torch.Tensor]:
    model = build_model("tiny", seed=0)
    seed_everything(seed)
    train_epochs(
        model,
        data,
        epochs=1,
        learning_rate=0.01,
        batch_size=2,
        device=torch.device("cpu"),
        seed=seed,
        proximal_mu=proximal_mu,
    )
    return model.state_dict()


def identical(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_the_same_seed_trains_the_same_weights_and_another_seed_does_not():
    data = patches()
    assert identical(trained(5, None, data), trained(5, None, data))
    assert not identical(trained(5, None, data), trained(6, None, data))


def test_a_proximal_term_with_mu_zero_changes_no_bit():
    data = patches()
    assert identical(trained(5, 0.0, data), trained(5, None, data))


def test_a_proximal_term_keeps_the_weights_closer_to_the_global_model():
    data = patches()
    start = build_model("tiny", seed=0).state_dict()

    def distance(state: dict) -> float:
        return sum(float((state[k] - start[k]).pow(2).sum()) for k in start) ** 0.5

    plain, pulled = distance(trained(5, None, data)), distance(trained(5, 50.0, data))
    assert pulled < 0.8 * plain


def test_round_seeds_differ_by_run_round_site_and_purpose():
    seeds = {
        round_seed(0, 1, "hospital-a", "train"),
        round_seed(1, 1, "hospital-a", "train"),
        round_seed(0, 2, "hospital-a", "train"),
        round_seed(0, 1, "hospital-b", "train"),
        round_seed(0, 1, "hospital-a", "local-only"),
    }
    assert len(seeds) == 5 and all(0 <= s < 2**32 for s in seeds)
    assert round_seed(0, 1, "hospital-a", "train") == round_seed(0, 1, "hospital-a", "train")


def test_training_that_diverges_is_an_error():
    broken = Dataset([{**item, "image": torch.full_like(item["image"], float("nan"))} for item in patches(2)])
    with pytest.raises(FloatingPointError, match="diverged"):
        train_epochs(
            build_model("tiny", seed=0),
            broken,
            epochs=1,
            learning_rate=0.01,
            batch_size=2,
            device=torch.device("cpu"),
        )


def test_the_region_loss_charges_a_core_called_edema_more_than_per_label_dice():
    """A prediction that is right about the whole tumour but calls its core edema: the tumour-core region costs a
    whole Dice term under RegionDiceCELoss, and far less under a per-label Dice with cross-entropy."""
    from monai.losses import DiceCELoss

    from site_app.learning.training import RegionDiceCELoss

    label = torch.zeros(1, 1, 12, 12, 12, dtype=torch.long)
    label[:, :, 2:10, 2:10, 2:10] = 2  # edema
    label[:, :, 5:7, 5:7, 5:7] = 1  # a small necrotic core
    label[:, :, 4:8, 4:8, 4] = 3  # an enhancing slab
    right = torch.nn.functional.one_hot(label[:, 0], 4).permute(0, 4, 1, 2, 3).float() * 20
    all_edema = torch.where(label > 0, torch.full_like(label, 2), label)
    wrong = torch.nn.functional.one_hot(all_edema[:, 0], 4).permute(0, 4, 1, 2, 3).float() * 20

    region = RegionDiceCELoss()
    per_label = DiceCELoss(to_onehot_y=True, softmax=True)
    assert float(region(right, label)) < 0.01
    region_cost = float(region(wrong, label)) - float(region(right, label))
    label_cost = float(per_label(wrong, label)) - float(per_label(right, label))
    assert region_cost > 0.6  # tumour core and enhancing tumour: two of three region terms lost
    assert region_cost > label_cost


def test_a_fresh_adam_warms_up_instead_of_moving_every_weight_by_the_whole_rate():
    """Adam's first step at the full rate moves each of the n weights by about the rate (a step of lr·√n); with
    the warm-up the first step is an eighth of that."""
    model = build_model("tiny", seed=0)
    start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    seed_everything(1)
    train_epochs(
        model,
        Dataset(list(patches(2))),
        epochs=1,
        learning_rate=0.01,
        batch_size=2,
        device=torch.device("cpu"),
        seed=1,
    )
    moved = float(
        torch.linalg.vector_norm(torch.cat([p.detach().flatten() for p in model.parameters()]) - start)
    )
    full_sign_step = 0.01 * start.numel() ** 0.5
    assert 0.05 * full_sign_step < moved < 0.25 * full_sign_step, (moved, full_sign_step)


def test_the_region_loss_charges_tumour_called_enhancing_in_its_subregion_term():
    """A prediction that finds the whole tumour but calls every tumour voxel enhancing (the short-training failure
    on the anatomy preset): the cross-entropy among the tumour labels over the tumour voxels charges it a whole
    term, while the plain cross-entropy (a mean over mostly background voxels) hardly notices."""
    from site_app.learning.training import RegionDiceCELoss

    label = torch.zeros(1, 1, 16, 16, 16, dtype=torch.long)
    label[:, :, 4:12, 4:12, 4:12] = 2  # edema
    label[:, :, 6:10, 6:10, 6:10] = 3  # enhancing rim
    label[:, :, 7:9, 7:9, 7:9] = 1  # necrotic core
    right = torch.nn.functional.one_hot(label[:, 0], 4).permute(0, 4, 1, 2, 3).float() * 4
    all_enhancing = torch.where(label > 0, torch.full_like(label, 3), label)
    wrong = torch.nn.functional.one_hot(all_enhancing[:, 0], 4).permute(0, 4, 1, 2, 3).float() * 4

    with_term, without = RegionDiceCELoss(), RegionDiceCELoss(subregion_weight=0.0)
    plain_ce = torch.nn.functional.cross_entropy
    subregion_cost = float(with_term(wrong, label) - without(wrong, label)) - float(
        with_term(right, label) - without(right, label)
    )
    assert subregion_cost > 3.0  # -log of a ~e^-4 probability at most tumour voxels
    assert float(plain_ce(wrong, label[:, 0]) - plain_ce(right, label[:, 0])) < 0.6
