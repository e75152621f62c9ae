"""Local training: cross-entropy plus region Dice (RegionDiceCELoss), Adam, random patches of the training cases.

Adam starts afresh at every call (a round), warming up over its first WARMUP_STEPS steps. Carrying its state over
from the site's earlier rounds (whole, or its second moments alone) was measured on the anatomy preset and did not
help: the moments belong to the site's own pre-averaging weights (bench/RESULTS.md, "Stability on a real brain").

Repeatable: `round_seed` derives every random stream of a round (data order, patch sampling, augmentation) from
the run seed, the round, the site and the purpose, and `seed_everything` seeds torch, numpy, Python and MONAI
with it, so the same command with the same seed trains the same weights on a CPU.

FedProx: with `proximal_mu` set, the gradient of μ/2·‖w − w_global‖² (that is μ·(w − w_global)) is added to
every parameter's gradient before each step, w_global being the weights the round started from. With μ = 0 the
added term is exactly zero and the weights are bit for bit those of plain training.
"""

import hashlib
import math
from collections.abc import Callable, Mapping

import torch
from monai.data import DataLoader, Dataset
from monai.utils import set_determinism

from models.shared.labels import BACKGROUND, REGIONS

SUBREGION_WEIGHT = 1.0
"""Weight of RegionDiceCELoss's cross-entropy among the tumour labels over the tumour voxels (0: off)."""


class RegionDiceCELoss(torch.nn.Module):
    """Cross-entropy over the label classes plus a soft Dice loss for each evaluation region (whole tumour, tumour
    core, enhancing tumour: models.shared.labels.REGIONS), the region's probability being the sum of its labels'
    softmax probabilities; each Dice is taken over the whole batch, without numerator smoothing.

    Why the regions and not the labels: the report measures regions. A model that calls the necrotic core and the
    enhancing rim edema loses little per-label Dice while the edema is right (edema is most of the tumour), and the
    tumour core's Dice falls to nothing; trained on the tumour core as one region, that same mistake costs a whole
    Dice term. Why over the batch: per patch, a region absent from the patch has a Dice term of
    smooth/(predicted + smooth) that only a prediction of nothing satisfies, which pulls every class towards empty
    predictions. The network and its softmax output are unchanged: inference, export and metrics read labels as
    before.

    Plus a cross-entropy among the tumour labels over the tumour voxels alone (`subregion_weight`): which tumour
    label a tumour voxel has. The plain cross-entropy is a mean over every voxel of the patch, ~98 % background, so
    its pull on a tumour voxel is ~100× weaker than the region Dice terms'; and the region Dice terms charge a
    false positive (edema called enhancing) far less than they reward a true positive while the overlap is small.
    Without this term a short training calls the necrotic core and much of the edema enhancing tumour and leaves
    the rest of the edema out (bench/RESULTS.md, "Stability on a real brain"). It does not move the line between
    tumour and background, which the whole-tumour Dice and the plain cross-entropy keep."""

    def __init__(
        self,
        regions: Mapping[str, tuple[int, ...]] = REGIONS,
        smooth: float = 1e-5,
        subregion_weight: float = SUBREGION_WEIGHT,
    ) -> None:
        super().__init__()
        self.subregion_weight = subregion_weight
        self.regions = {name: list(labels) for name, labels in regions.items()}
        self.region_values = [torch.tensor(labels) for labels in self.regions.values()]
        """Each region's label values as a tensor, made once rather than at every step."""
        self.smooth = smooth
        self.cross_entropy = torch.nn.CrossEntropyLoss()

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """`logits` (B, C, X, Y, Z); `label` (B, 1, X, Y, Z) integer label values."""
        target = label[:, 0].long()
        probabilities = torch.softmax(logits, dim=1)
        dice_losses = []
        for labels, values in zip(self.regions.values(), self.region_values, strict=True):
            predicted = probabilities[:, labels].sum(dim=1)
            truth = torch.isin(target, values.to(target.device)).to(predicted.dtype)
            overlap = (predicted * truth).sum()
            dice_losses.append(1 - 2 * overlap / (predicted.sum() + truth.sum() + self.smooth))
        loss = self.cross_entropy(logits, target) + torch.stack(dice_losses).mean()
        tumour = target != BACKGROUND
        if self.subregion_weight and bool(tumour.any()):
            among_tumour = torch.log_softmax(logits[:, 1:], dim=1).movedim(1, -1)[tumour]
            loss = loss + self.subregion_weight * torch.nn.functional.nll_loss(
                among_tumour, target[tumour] - 1
            )
        return loss


WARMUP_STEPS = 8
"""A fresh Adam's learning rate rises linearly over the first this many steps of a training call: its first
steps are otherwise sign steps of the whole rate on every weight, which move each site's model further than the
round's gradients warrant."""


def round_seed(run_seed: int, server_round: int, site: str, stream: str) -> int:
    """A 32-bit seed for one random stream ("train", "local-only", …) of one site in one round."""
    digest = hashlib.sha256(f"{run_seed}/{server_round}/{site}/{stream}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def seed_everything(seed: int) -> None:
    """torch, numpy, random and MONAI's transforms (MONAI's set_determinism; cuDNN in deterministic mode)."""
    set_determinism(seed=seed)


def train_epochs(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    device: torch.device,
    seed: int | None = None,
    proximal_mu: float | None = None,
    after_epoch: Callable[[int], bool] | None = None,
    lr_scale: float = 1.0,
) -> float:
    """Train in place; returns the mean loss over all steps (a finite float, or raises).

    With `seed` the batch order depends on it alone, not on the process's random state: a round trains the same
    in a fresh process (deployment), a reused one (simulation) and a resumed run (site_app.learning.federated_round seeds
    it from the run seed, the round and the site). With `proximal_mu` (FedProx) the loss adds μ/2·‖w − w₀‖².
    `after_epoch(n)` runs after the n-th epoch (1-based) and ends training early when it returns True (the quality
    benchmark's plateau search evaluates snapshots of one run there). Adam starts afresh; every step's rate is `learning_rate` ×
    `lr_scale` (the coordinator's schedule, site_app.site_message.SiteMessage.lr_scale), with a warm-up over the first
    WARMUP_STEPS steps."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=0, generator=generator
    )  # workers crash in Ray actors
    loss_fn = RegionDiceCELoss()
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=learning_rate)
    anchor = [p.detach().clone() for p in params] if proximal_mu is not None else None
    total, steps = 0.0, 0
    for epoch in range(1, epochs + 1):
        for batch in loader:
            image, label = batch["image"].to(device), batch["label"].to(device)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * lr_scale * min(1.0, (steps + 1) / WARMUP_STEPS)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(image), label.long())
            loss.backward()
            if anchor is not None:
                for param, start in zip(params, anchor, strict=True):
                    if param.grad is not None:
                        param.grad.add_(param.detach() - start, alpha=proximal_mu)
            optimizer.step()
            total += float(loss.item())
            steps += 1
        if after_epoch is not None:
            stop = after_epoch(epoch)
            model.train()
            if stop:
                break
    mean_loss = total / max(steps, 1)
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"training diverged: mean loss {mean_loss}")
    return mean_loss
