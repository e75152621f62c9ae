"""Local training: DiceCE loss and Adam over random patches of the site's training cases."""

import math

import torch
from monai.data import DataLoader, Dataset
from monai.losses import DiceCELoss


def train_epochs(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    device: torch.device,
    seed: int | None = None,
) -> float:
    """Train in place; returns the mean loss over all steps (a finite float, or raises).

    With `seed` the batch order depends on it alone, not on the process's random state: a round trains the same
    in a fresh process (deployment), a reused one (simulation) and a resumed run."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=0, generator=generator
    )  # workers crash in Ray actors
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    model.to(device).train()
    total, steps = 0.0, 0
    for _ in range(epochs):
        for batch in loader:
            image, label = batch["image"].to(device), batch["label"].to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(image), label.long())
            loss.backward()
            optimizer.step()
            total += float(loss.item())
            steps += 1
    mean_loss = total / max(steps, 1)
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"training diverged: mean loss {mean_loss}")
    return mean_loss
