"""Pipeline: cases/s to load and preprocess from NIfTI, from DICOM series and from the cache; epoch time with and
without the cache; prediction (oncofed site predict) against validation, per case.

Cases come from the synthetic federation (hospital-b exports DICOM CT series + DICOM-SEG, the other sites NIfTI,
each with its own orientation and spacing). The pipeline is the sites' own: data_prep.transforms.preprocess,
data_prep.dataset.usable_items (fills the cache), SiteCache (reads it, as validation does), training_dataset + train_epochs.
Prediction is site_app.tools.predict_run.predict_folder (read, predict, map back, write the NIfTI and, for DICOM, the
DICOM-SEG); validation is site_app.learning.validation.evaluate_case (read image and label, predict, map back, metrics),
with the same model on the same cases.
"""

import itertools
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

import torch
from common import (
    ImageLabelPatches,
    markdown_table,
    out_folder,
    parse,
    parser,
    report,
    run_config,
    synchronize,
    torch_device,
)
from flwr.app import ArrayRecord
from monai.data import Dataset

from data_prep.dataset import SiteCache, training_dataset, usable_items
from data_prep.discovery import CaseFiles, Discovery, discover_cases
from data_prep.ingest_settings import IngestSettings
from data_prep.synth.federation import write_federation
from data_prep.transforms import PipelineSettings, case_item, preprocess, training
from models.model_source import inference_meta, load_model_source
from models.presets import build_model, get_preset
from models.weights import save_checkpoint
from site_app.learning.metrics import evaluation_regions
from site_app.learning.training import train_epochs
from site_app.learning.validation import evaluate_case
from site_app.settings.identity import site_folders
from site_app.settings.run_settings import SiteRunSettings
from site_app.tools.predict_run import predict_folder

T = TypeVar("T")
N_SITES = 4
DATA_SEED = 0


def cases_by_format(data: Path, per_format: int) -> dict[str, list[CaseFiles]]:
    """Up to `per_format` cases of each image format, taken in turn from the sites that export it."""
    by_format: dict[str, list[list[CaseFiles]]] = {}
    for folder in site_folders(data):
        cases = discover_cases(folder)
        by_format.setdefault(cases[0].image_format, []).append(cases)
    return {
        fmt: [c for c in itertools.chain(*itertools.zip_longest(*sites)) if c][:per_format]
        for fmt, sites in sorted(by_format.items())
    }


def timed(action: Callable[[], T]) -> tuple[float, T]:
    """(seconds, result) of one call."""
    clock = time.perf_counter()
    result = action()
    return time.perf_counter() - clock, result


def read_all(dataset: Dataset | ImageLabelPatches) -> None:
    for index in range(len(dataset)):
        dataset[index]


def format_rows(
    fmt: str, cases: list[CaseFiles], settings: PipelineSettings, ingest: IngestSettings, cache: Path
) -> tuple[list[list[object]], list[dict[str, object]]]:
    """Cache key, load+preprocess without cache, first pass filling the cache, read from the cache; the items."""
    t_key, items = timed(lambda: [case_item(c, settings.preprocessing, ingest) for c in cases])
    pipeline = preprocess(settings.preprocessing)
    t_plain, _ = timed(lambda: [pipeline(item) for item in items])
    t_fill, (usable, skipped) = timed(lambda: usable_items(cases, settings, cache, ingest))
    if skipped:
        raise RuntimeError(f"{len(skipped)} {fmt} case(s) failed to preprocess: {skipped[0][1]}")
    t_cached, _ = timed(lambda: read_all(SiteCache(usable, transform=pipeline, cache_dir=cache)))
    n = len(cases)
    rows = [
        [stage, fmt, n, t / n, n / t]
        for stage, t in (
            ("cache key (SHA-256 of the files)", t_key),
            ("load + preprocess, no cache", t_plain),
            ("first pass: key + preprocess + write cache", t_fill),
            ("read from the cache", t_cached),
        )
    ]
    return rows, usable


def training_epoch(dataset: ImageLabelPatches, settings: SiteRunSettings, device: torch.device) -> None:
    """One epoch of the sites' training loop from a fresh model."""
    model = build_model(settings.model_preset, seed=settings.seed)
    train_epochs(
        model,
        dataset,
        epochs=1,
        learning_rate=settings.learning_rate,
        batch_size=settings.batch_size,
        device=device,
    )
    synchronize(device)


def epoch_rows(
    items: Sequence[dict[str, object]], settings: SiteRunSettings, cache: Path, device: torch.device
) -> list[list[object]]:
    """One epoch of patches (data only, then a training epoch) without and with the cache."""
    pipeline = settings.pipeline

    def datasets() -> dict[str, ImageLabelPatches]:
        return {
            "no cache": ImageLabelPatches(Dataset(list(items), transform=training(pipeline, settings.seed))),
            "cache": ImageLabelPatches(training_dataset(list(items), pipeline, cache, seed=settings.seed)),
        }

    data_only = {name: timed(partial(read_all, d))[0] for name, d in datasets().items()}
    trained = {name: timed(partial(training_epoch, d, settings, device))[0] for name, d in datasets().items()}
    return [
        [
            f"patches only ({pipeline.samples_per_case} per case)",
            data_only["no cache"],
            data_only["cache"],
            data_only["cache"] / data_only["no cache"],
        ],
        [
            f"training epoch ({settings.model_preset}, {device})",
            trained["no cache"],
            trained["cache"],
            trained["cache"] / trained["no cache"],
        ],
    ]


def prediction_rows(
    cases: Sequence[CaseFiles], settings: SiteRunSettings, out: Path, device: torch.device
) -> list[list[object]]:
    """Seconds per case: `site predict`'s work (files written) and validation's, same model, same cases."""
    checkpoint = out / "predict-model.pt"
    model = build_model(settings.model_preset, seed=settings.seed)
    meta = {
        "model_preset": settings.model_preset,
        "round": 0,
        **inference_meta(settings.pipeline.spacing_mm, settings.pipeline.patch_size),
    }
    save_checkpoint(ArrayRecord(model.state_dict()), checkpoint, meta)
    source = load_model_source(checkpoint)
    ingest = IngestSettings()
    t_predict, run = timed(
        lambda: predict_folder(
            source, Discovery(cases=list(cases)), out / "data", out / "predictions", ingest, device=device
        )
    )
    if len(run.written) != len(cases):
        raise RuntimeError(f"{len(cases) - len(run.written)} case(s) not predicted: {run.studies}")
    items = [case_item(c, settings.pipeline, ingest) for c in cases]
    regions = evaluation_regions("brats")
    model = source.build()
    synchronize(device)
    t_validate, _ = timed(
        lambda: [evaluate_case(model, item, settings.pipeline, regions, device) for item in items]
    )
    n = len(cases)
    return [
        ["site predict (NIfTI + DICOM-SEG + predictions.json)", n, t_predict / n, n / t_predict],
        ["validation (evaluate_case: prediction + metrics)", n, t_validate / n, n / t_validate],
    ]


def main() -> None:
    options = parser(__doc__, preset="bench", device=True)
    options.add_argument(
        "--cases", type=int, default=None, help="cases per format (default 12; 3 with --quick)"
    )
    options.add_argument(
        "--model", default=None, help="model for the training epoch (default small; tiny quick)"
    )
    args = parse(options)
    started = time.monotonic()
    device = torch_device(args.device)
    out = out_folder(args.out, "pipeline")
    per_format = args.cases or (3 if args.quick else 12)
    model_preset = args.model or ("tiny" if args.quick else "small")
    config = run_config(model_preset=model_preset, patch_size=get_preset(model_preset).patch_size)
    settings = SiteRunSettings.from_run_config(config)
    cache = out / "cache"
    cache.mkdir(exist_ok=True)

    write_federation(out / "data", n_sites=N_SITES, seed=DATA_SEED, preset=args.preset)
    cases = cases_by_format(out / "data", per_format)
    stages, items = [], []
    for fmt, format_cases in cases.items():
        rows, usable = format_rows(fmt, format_cases, settings.pipeline, IngestSettings(), cache)
        stages += rows
        items += usable
    epochs = epoch_rows(items, settings, cache, device)
    predictions = prediction_rows([c for fmt in cases.values() for c in fmt], settings, out, device)

    notes = [
        f"Data: `oncofed synth --preset {args.preset} --sites {N_SITES} --seed {DATA_SEED}`; "
        + ", ".join(f"{len(c)} {fmt} cases" for fmt, c in cases.items())
        + f"; spacing {settings.pipeline.spacing_mm} mm, patch {settings.pipeline.patch_size}.",
        (
            f"Epochs run over all {len(items)} cases; cached_over_uncached is the training epoch's time with the cache"
            " over without (below 1: the cache helps)."
        ),
    ]
    ratios = {
        "cached_over_uncached": epochs[1][3],
        "cached_over_uncached_data": epochs[0][3],
        "predict_over_validate": predictions[0][2] / predictions[1][2],
    }
    report(
        "pipeline",
        args.results,
        [
            markdown_table(["stage", "format", "cases", "s/case", "cases/s"], stages),
            markdown_table(["epoch", "no cache s", "cache s", "cache/no cache"], epochs),
            markdown_table(["per case", "cases", "s/case", "cases/s"], predictions),
        ],
        ratios,
        notes,
        started,
    )


if __name__ == "__main__":
    main()
