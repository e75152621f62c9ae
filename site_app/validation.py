"""Local validation: sliding-window inference over whole preprocessed volumes, metrics per case."""

import torch
from monai.data import Dataset
from monai.inferers import sliding_window_inference

from site_app.metrics import case_metrics


@torch.no_grad()
def predict(model: torch.nn.Module, image: torch.Tensor, patch_size: int, device: torch.device) -> torch.Tensor:
    """(1, X, Y, Z) image → (X, Y, Z) label map (argmax over classes)."""
    model.to(device).eval()
    logits = sliding_window_inference(image[None].to(device), roi_size=(patch_size,) * 3, sw_batch_size=2,
                                      predictor=model, overlap=0.25, mode="gaussian")
    return logits.argmax(dim=1)[0].cpu()


def validate_cases(model: torch.nn.Module, dataset: Dataset, patch_size: int, spacing_mm: float,
                   device: torch.device) -> list[dict[str, float]]:
    """Per-case metrics (these stay at the site) in dataset order."""
    results = []
    for item in dataset:
        prediction = predict(model, item["image"], patch_size, device)
        results.append(case_metrics(prediction, item["label"][0].long(), (spacing_mm,) * 3))
    return results
