"""Adam's moments carry over between a site's rounds: from the latest earlier round only, with this round's
settings, and without the burst of full-size sign steps a new Adam starts with."""

import torch
from monai.data import Dataset

from models.presets import build_model
from site_app.learning.optimizer_state import AdamState
from site_app.learning.training import seed_everything, train_epochs


def patches(n: int = 4) -> Dataset:
    """Random 16³ images with a bright cube labelled 3 inside a region labelled 2."""
    generator = torch.Generator().manual_seed(3)
    items = []
    for _ in range(n):
        image = torch.randn(1, 16, 16, 16, generator=generator)
        label = torch.zeros(1, 16, 16, 16, dtype=torch.uint8)
        label[:, 4:12, 4:12, 4:12] = 2
        label[:, 6:10, 6:10, 6:10] = 3
        image[label > 0] += 2.0
        items.append({"image": image, "label": label})
    return Dataset(items)


def train_round(model, state: AdamState | None, learning_rate: float = 0.01) -> float:
    seed_everything(1)
    return train_epochs(
        model,
        patches(),
        epochs=1,
        learning_rate=learning_rate,
        batch_size=2,
        device=torch.device("cpu"),
        seed=1,
        optimizer_state=state,
    )


def adam_steps(path) -> set[int]:
    saved = torch.load(path, weights_only=True)["optimizer"]["state"]
    return {int(s["step"]) for s in saved.values()}


def test_each_round_starts_from_the_latest_earlier_round_and_older_files_go(tmp_path):
    model = build_model("tiny", seed=0)
    for server_round in (1, 2, 3):
        train_round(model, AdamState(tmp_path, "train", server_round))
    assert adam_steps(tmp_path / "adam-train-3.pt") == {6}  # 2 steps a round, three rounds
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adam-train-2.pt", "adam-train-3.pt"]


def test_a_round_trained_again_starts_as_it_did_the_first_time(tmp_path):
    """After a stop, a resumed run trains round 3 again: from round 2's moments, not from round 3's own."""
    model = build_model("tiny", seed=0)
    for server_round in (1, 2):
        train_round(model, AdamState(tmp_path, "train", server_round))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    train_round(model, AdamState(tmp_path, "train", 3))
    first = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(start)
    train_round(model, AdamState(tmp_path, "train", 3))
    assert all(torch.equal(first[k], v) for k, v in model.state_dict().items())
    assert adam_steps(tmp_path / "adam-train-3.pt") == {6}


def test_streams_keep_their_own_moments_and_the_rounds_learning_rate_applies(tmp_path):
    model = build_model("tiny", seed=0)
    train_round(model, AdamState(tmp_path, "train", 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
    assert not AdamState(tmp_path, "local-only", 2).load(optimizer)
    assert AdamState(tmp_path, "train", 2).load(optimizer)
    assert optimizer.param_groups[0]["lr"] == 0.005  # the saved lr (0.01) is not taken


def test_kept_moments_take_smaller_first_steps_than_a_new_adam(tmp_path):
    """A new Adam's first step would move every weight by the full learning rate: one that remembers the earlier
    rounds' gradient scale (its first moments from zero) and a new one warming up both move them far less."""
    model = build_model("tiny", seed=0)
    for server_round in (1, 2, 3):
        train_round(model, AdamState(tmp_path, "train", server_round))
    start = {k: v.clone() for k, v in model.state_dict().items()}

    def first_step(state: AdamState | None) -> float:
        model.load_state_dict(start)
        seed_everything(1)
        train_epochs(
            model,
            Dataset(list(patches())[:2]),
            epochs=1,
            learning_rate=0.01,
            batch_size=2,
            device=torch.device("cpu"),
            seed=1,
            optimizer_state=state,
        )
        return sum(float((v - start[k]).float().norm() ** 2) for k, v in model.state_dict().items()) ** 0.5

    # a new Adam at the full rate moves each of the n weights by about the rate: a step of lr·√n
    full_sign_step = 0.01 * sum(p.numel() for p in model.parameters()) ** 0.5
    kept, warmed_up = first_step(AdamState(tmp_path, "train", 4)), first_step(None)
    assert kept < 0.25 * full_sign_step and warmed_up < 0.25 * full_sign_step, (
        kept,
        warmed_up,
        full_sign_step,
    )


def test_kept_second_moments_come_back_and_the_first_moments_start_at_zero(tmp_path):
    """The scale per weight carries over; the direction (the site's own pre-averaging heading) does not."""
    model = build_model("tiny", seed=0)
    train_round(model, AdamState(tmp_path, "train", 1))
    saved = torch.load(tmp_path / "adam-train-1.pt", weights_only=True)["optimizer"]["state"]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    assert AdamState(tmp_path, "train", 2).load(optimizer)
    for index, state in enumerate(optimizer.state.values()):
        assert torch.count_nonzero(state["exp_avg"]) == 0
        assert torch.equal(state["exp_avg_sq"], saved[index]["exp_avg_sq"])
    assert any(torch.count_nonzero(s["exp_avg"]) for s in saved.values())  # there was a direction to drop
