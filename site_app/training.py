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
) -> float:
    """Train in place; returns the mean loss over all steps (a finite float, or raises)."""
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=0
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
