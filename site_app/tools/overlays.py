"""Overlay images for the site-local report: axial, coronal and sagittal slices through the tumor, with the
label's contours (solid) and the prediction's (dashed), one colour per region.

Arrays are (X, Y, Z) in RAS on the evaluation grid (isotropic voxels). Slices are shown in the radiological
convention: the patient's right on the left of the image, anterior and superior up; each panel is lettered.
"""

import io
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np

REGION_COLOURS = ("#00C853", "#FFD600", "#FF1744", "#2979FF", "#D500F9")

VIEWS = (  # name, axis held fixed, (left, right, bottom, top) letters
    ("axial", 2, ("R", "L", "P", "A")),
    ("coronal", 1, ("R", "L", "I", "S")),
    ("sagittal", 0, ("A", "P", "I", "S")),
)


def tumor_centre(truth: np.ndarray, prediction: np.ndarray) -> tuple[int, int, int]:
    """Centre of the labelled tumor; of the predicted one when the label has none; else of the volume."""
    for mask in (truth > 0, prediction > 0):
        if mask.any():
            return tuple(round(float(c)) for c in np.argwhere(mask).mean(axis=0))
    return tuple(s // 2 for s in truth.shape)


def overlay_png(
    image: np.ndarray,
    truth: np.ndarray,
    prediction: np.ndarray,
    regions: Mapping[str, tuple[int, ...]],
    title: str,
) -> bytes:
    """One PNG with the three views through the tumor centre."""
    centre = tumor_centre(truth, prediction)
    low, high = np.percentile(image, [1.0, 99.0])
    figure, panels = plt.subplots(1, 3, figsize=(10.5, 3.7))
    for panel, (name, axis, letters) in zip(panels, VIEWS, strict=True):
        index = [slice(None)] * 3
        index[axis] = centre[axis]
        shown = tuple(index)
        # (A, B) slice → imshow of its transpose: B runs up; the first axis is flipped so R (or A) is on the left.
        panel.imshow(image[shown].T[:, ::-1], cmap="gray", vmin=low, vmax=high, origin="lower")
        for colour, values in zip(REGION_COLOURS, regions.values(), strict=False):
            for mask, style in ((truth, "solid"), (prediction, "dashed")):
                region = np.isin(mask[shown], values).T[:, ::-1]
                if region.any():
                    panel.contour(
                        region.astype(float), levels=[0.5], colors=[colour], linestyles=style, linewidths=1.3
                    )
        panel.set_title(f"{name} (slice {centre[axis]})", fontsize=9)
        panel.set_xticks([])
        panel.set_yticks([])
        for x, y, letter in (
            (0.02, 0.5, letters[0]),
            (0.98, 0.5, letters[1]),
            (0.5, 0.02, letters[2]),
            (0.5, 0.98, letters[3]),
        ):
            panel.text(
                x, y, letter, transform=panel.transAxes, color="white", fontsize=8, ha="center", va="center"
            )
    handles = [
        plt.Line2D([], [], color=c, linestyle=s, label=f"{name.upper()} {kind}")
        for c, name in zip(REGION_COLOURS, regions, strict=False)
        for s, kind in (("solid", "label"), ("dashed", "prediction"))
    ]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    figure.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()
