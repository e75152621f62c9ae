"""Segment one study with a model, as validation does: the training preprocessing, sliding-window inference at the
run's spacing, and the prediction mapped back onto the grid the study is stored on.

The way back inverts the preprocessing (MONAI Invertd, nearest neighbour) and then passes the one grid rule
(data_prep.volume.on_grid_of): the label map gets the image's exact shape, voxel order and affine, or the study
fails with both grids named.
"""

from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd

from data_prep.dicom.series import DicomSeries
from data_prep.discovery import CaseFiles
from data_prep.ingest_settings import IngestSettings
from data_prep.loading import load_image
from data_prep.transforms import PipelineSettings, image_preprocess
from data_prep.volume import Volume, on_grid_of
from models.shared.labels import LABEL_NAMES
from site_app.learning.validation import predict


@dataclass(frozen=True, eq=False)
class StudyPrediction:
    image: Volume
    """The study's image as stored (i, j, k), RAS affine."""
    series: DicomSeries | None
    """The DICOM series the image was read from; None for NIfTI."""
    label: np.ndarray
    """uint8 label map (values 0-3) on the image's grid."""

    def volumes_ml(self) -> dict[str, float]:
        """Label value ("1".."3") -> predicted volume in mL, at the stored voxel size."""
        voxel_ml = float(np.prod(self.image.spacing_mm)) / 1000.0
        counts = np.bincount(self.label.ravel(), minlength=len(LABEL_NAMES))
        return {str(value): round(float(counts[value]) * voxel_ml, 3) for value in LABEL_NAMES if value}


def predict_study(
    model: torch.nn.Module,
    case: CaseFiles,
    settings: PipelineSettings,
    ingest: IngestSettings,
    device: torch.device,
) -> StudyPrediction:
    """Read, preprocess, predict and map back one study. Raises CaseError (unreadable study, grid mismatch) or
    ValueError (an image the preprocessing cannot normalise, e.g. constant)."""
    image, series = load_image(case, ingest)
    source = case.image[0] if series is None else series.folder
    pipeline = image_preprocess(settings.preprocessing)
    processed = pipeline({"image": MetaTensor(torch.as_tensor(image.array)[None], affine=image.affine)})
    prediction = predict(model, processed["image"], settings.patch_size, device)
    restored = stored_grid(prediction, processed["image"], pipeline)
    label = on_grid_of(restored, image, f"the prediction for {source}", source)
    return StudyPrediction(image=image, series=series, label=label.array.astype(np.uint8))


def stored_grid(prediction: torch.Tensor, image: MetaTensor, pipeline: Compose) -> Volume:
    """(X, Y, Z) prediction on the preprocessed grid → a Volume on the grid the image had before ``pipeline``."""
    pred = MetaTensor(
        prediction[None].to(torch.uint8),
        meta=dict(image.meta),
        applied_operations=list(image.applied_operations),
    )
    inverse = Invertd(keys="pred", transform=pipeline, orig_keys="image", nearest_interp=True)
    restored = inverse({"pred": pred, "image": image})["pred"]
    return Volume(
        array=restored[0].numpy().round().astype(np.uint8),
        affine=np.asarray(restored.affine, dtype=np.float64),
    )
