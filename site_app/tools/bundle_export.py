"""``oncofed export``: a model as a MONAI bundle that MONAI (monai.bundle) loads and runs offline.

Bundle layout::

    configs/metadata.json    network definition, input/output spec, label names, training summary, our settings
    configs/inference.json   NIfTI folder in -> label maps out: the sites' preprocessing, the same sliding window,
                             the prediction mapped back onto each image's grid (Invertd), SaveImaged; plain
                             MONAI components and expressions (no engine, so no pytorch-ignite needed)
    models/model.pt          the weights (a plain state dict, as MONAI's CheckpointLoader reads it)
    models/model.ts          TorchScript of the network: (B, 1, X, Y, Z) -> (B, 4, X, Y, Z) logits
    scripts/oncofed_intensity.py   data_prep/intensity.py, copied verbatim (head mask, z-score over the head)
    docs/README.md           how to run it

Run: ``python -m monai.bundle run --config_file B/configs/inference.json --bundle_root B --dataset_dir IN
--output_dir OUT`` (every *.nii / *.nii.gz in IN). The preprocessing steps are data_prep.transforms'
``preprocessing_steps`` written out as config, and the sliding window is site_app.learning.validation's, so the bundle
predicts what ``oncofed site predict`` predicts. The bundle is written under a hidden name beside OUT and renamed
when complete.
"""

import functools
import inspect
import json
import shutil
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import torch

from data_prep import intensity
from data_prep.transforms import PipelineSettings, PreprocessSettings, preprocessing_steps
from models.model_source import (
    BUNDLE_INFERENCE,
    BUNDLE_METADATA,
    BUNDLE_OWN_KEY,
    BUNDLE_TORCHSCRIPT,
    BUNDLE_WEIGHTS,
    META_PATCH_SIZE,
    META_PRESET,
    META_ROUND,
    META_SPACING_MM,
    ModelSource,
    ModelSourceError,
)
from models.presets import NETWORK, network_arguments
from models.shared.exit_codes import ExitCode, errors_as
from models.shared.labels import LABEL_NAMES, NUM_CLASSES
from models.shared.run_config import TRAINING_SETTINGS
from models.shared.terminal import make_console
from site_app.learning.personalize import META_PERSONALIZED_FROM, META_ROLE, model_description, model_role
from site_app.learning.validation import SLIDING_WINDOW
from site_app.tools.model_choice import command_model

SCRIPTS_MODULE = "oncofed_intensity"
"""The bundle's copy of data_prep/intensity.py: scripts/<this>.py."""


def export_bundle(source: ModelSource, out: Path) -> Path:
    """Write ``source`` as a bundle folder at ``out`` (which must not exist or be empty); returns ``out``."""
    out = Path(out).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"{out} already exists and is not an empty folder; choose a new folder for the bundle"
        )
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write(source, staging)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _write(source: ModelSource, root: Path) -> None:
    settings = PipelineSettings(
        spacing_mm=source.spacing_mm, patch_size=source.patch_size, samples_per_case=1
    ).preprocessing  # the sites' PreprocessSettings for this model, as site predict rebuilds them
    for folder in ("configs", "models", "scripts", "docs"):
        (root / folder).mkdir(parents=True)
    torch.save(
        {
            name: tensor.float() if tensor.is_floating_point() else tensor
            for name, tensor in source.state_dict.items()
        },
        root / BUNDLE_WEIGHTS,
    )
    model = source.build()
    with (
        warnings.catch_warnings()
    ):  # TorchScript is deprecated in favour of torch.export, still what MONAI loads
        warnings.simplefilter("ignore")
        torch.jit.script(model).save(str(root / BUNDLE_TORCHSCRIPT))
    (root / "scripts" / "__init__.py").write_text("")
    (root / "scripts" / f"{SCRIPTS_MODULE}.py").write_text(inspect.getsource(intensity))
    _write_json(root / BUNDLE_METADATA, metadata(source))
    _write_json(root / BUNDLE_INFERENCE, inference_config(source.preset, settings))
    (root / "docs" / "README.md").write_text(_readme(source))


def inference_config(preset: str, settings: PreprocessSettings) -> dict[str, object]:
    """configs/inference.json: predict every NIfTI image in ``dataset_dir`` into ``output_dir`` ("run")."""
    patch = [settings.pad_to] * 3
    return {
        "imports": ["$import glob", "$import sys"],
        "bundle_root": ".",
        "dataset_dir": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "output_postfix": "seg",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "python_path": "$sys.path.insert(0, @bundle_root)",
        "network_def": {"_target_": NETWORK, **network_arguments(preset)},
        "network": "$@network_def.to(@device)",
        "datalist": (
            "$[{'image': f} for f in sorted(glob.glob(@dataset_dir + '/*.nii'))"
            " + sorted(glob.glob(@dataset_dir + '/*.nii.gz'))]"
        ),
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {
                    "_target_": "LoadImaged",
                    "keys": "image",
                    "reader": "NibabelReader",
                    "dtype": "$np.float32",
                },
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                *(_step(step, arguments) for step, arguments in preprocessing_steps(settings, ("image",))),
            ],
        },
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": patch, **SLIDING_WINDOW},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": "image",
                    "nearest_interp": True,
                    "to_tensor": True,
                },
                {
                    "_target_": "SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "output_postfix": "@output_postfix",
                    "output_dtype": "$np.uint8",
                    "resample": False,
                    "separate_folder": False,
                },
            ],
        },
        "predict": (
            "$lambda item: dict(item, pred=@inferer(item['image'][None].to(@device), @network)[0].cpu())"
        ),
        "run": [
            "$torch.set_grad_enabled(False)",
            (
                f"$@network.load_state_dict(torch.load(@bundle_root + '/{BUNDLE_WEIGHTS.as_posix()}',"
                " map_location=@device, weights_only=True))"
            ),
            "$@network.eval()",
            "$[@postprocessing(@predict(item)) for item in @dataset]",
        ],
    }


def _step(step: type, arguments: dict[str, object]) -> dict[str, object]:
    """One preprocessing step as a bundle config component; our own transforms come from the bundle's scripts."""
    config = _own(step) if step.__module__ == intensity.__name__ else {"_target_": step.__name__}
    for name, value in arguments.items():
        config[name] = _config_value(value)
    return config


def _own(target: Callable) -> dict[str, object]:
    """A component made from the bundle's copy of data_prep/intensity.py (found once python_path has run)."""
    return {"_target_": f"scripts.{SCRIPTS_MODULE}.{target.__name__}", "_requires_": "@python_path"}


def _config_value(value: object) -> object:
    if isinstance(value, functools.partial):  # e.g. the head mask with its parameters: passed, not called
        if value.args:
            raise ValueError(f"cannot write {value!r} into a bundle config (positional arguments)")
        own = _config_value(value.func)
        return {**own, **{name: _config_value(v) for name, v in value.keywords.items()}}
    if inspect.isfunction(value):  # a function of data_prep.intensity: passed, not called
        if value.__module__ != intensity.__name__:
            raise ValueError(f"cannot write {value!r} into a bundle config")
        return {**_own(value), "_mode_": "callable"}
    if isinstance(value, torch.dtype):
        return f"${value}"  # "$torch.float32"
    if isinstance(value, tuple | list):
        return [_config_value(v) for v in value]
    return value


def metadata(source: ModelSource) -> dict[str, object]:
    """configs/metadata.json in MONAI's bundle metadata format, plus our own settings under BUNDLE_OWN_KEY."""
    patch = [source.patch_size] * 3
    labels = {str(value): name for value, name in LABEL_NAMES.items()}
    return {
        "version": version("oncofed"),
        "changelog": {version("oncofed"): f"exported by oncofed export from {Path(source.path).name}"},
        "monai_version": version("monai"),
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": version("numpy"),
        "required_packages_version": {"nibabel": version("nibabel")},
        "name": f"OncoFed brain tumor segmentation ({source.preset})",
        "task": "3D segmentation of brain tumor sub-regions: necrotic core, edema, enhancing tumor",
        "description": (
            "A MONAI 3D UNet trained by federated learning (OncoFed, FedAvg). Research use only, not for"
            " diagnosis. Input: one single-channel 3D CT or MR volume (NIfTI), any orientation and voxel size;"
            f" it is reoriented to RAS, resampled to {source.spacing_mm} mm, cropped to the head and z-scored over"
            " the head. Output: a label map on the input's grid."
        ),
        "authors": "OncoFed federation",
        "copyright": "OncoFed federation",
        "intended_use": "research use only, not for diagnosis",
        "data_type": "nifti",
        "image_classes": "single-channel CT or MR intensities",
        "label_classes": labels,
        "network_def": {"_target_": NETWORK, **network_arguments(source.preset)},
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "CT or MR",
                    "num_channels": 1,
                    "spatial_shape": patch,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {"0": "image, z-scored over the head"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": NUM_CLASSES,
                    "spatial_shape": patch,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": labels,
                }
            },
        },
        BUNDLE_OWN_KEY: {
            META_PRESET: source.preset,
            META_SPACING_MM: source.spacing_mm,
            META_PATCH_SIZE: source.patch_size,
            META_ROUND: source.meta.get(META_ROUND),
            "model_sha256": source.sha256,
            META_ROLE: model_role(source.meta),
            **(
                {META_PERSONALIZED_FROM: source.meta[META_PERSONALIZED_FROM]}
                if META_PERSONALIZED_FROM in source.meta
                else {}
            ),
            "sliding_window": {"roi_size": patch, **SLIDING_WINDOW},
            "training": training_summary(Path(source.path)),
        },
    }


def training_summary(checkpoint: Path) -> dict[str, object]:
    """Aggregates of the run that produced ``checkpoint`` (RUN/models/x.pt), from RUN/summary.json and config.json."""
    run_dir = checkpoint.absolute().parent.parent
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        run_config = json.loads((run_dir / "config.json").read_text(encoding="utf-8")).get("run_config", {})
    except (OSError, ValueError):
        return {"note": f"no run folder beside {checkpoint.name}: the training run is not described here"}
    sites = {}
    for name, site in sorted(summary.get("sites", {}).items()):
        last = site.get("last") or {}
        sites[name] = {
            "status": site.get("status"),
            "validation_cases": site.get("n_cases"),
            "round": site.get("last_round"),
            "dice_mean": last.get("dice-mean"),
            "dice_mean_ci95": [last.get("dice-mean-ci-low"), last.get("dice-mean-ci-high")],
        }
    return {
        "run": run_dir.name,
        "strategy": "FedAvg, weighted by each site's number of training cases",
        "rounds_evaluated": summary.get("rounds_evaluated"),
        "best": summary.get("best"),
        "settings": {s.key: run_config[s.key] for s in TRAINING_SETTINGS if s.key in run_config},
        "sites": sites,
        "site_overview": summary.get("site_overview", {}),
    }


def _write_json(path: Path, payload: object) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def _readme(source: ModelSource) -> str:
    return f"""# OncoFed brain tumor segmentation ({source.preset})

Research use only, not for diagnosis. Model {source.sha256}: {model_description(source.meta)}.

Labels: {", ".join(f"{k} {v}" for k, v in LABEL_NAMES.items())}.

Run on a folder of NIfTI images (offline; needs monai, torch, nibabel):

    python -m monai.bundle run --config_file configs/inference.json --bundle_root . \\
        --dataset_dir /path/to/images --output_dir /path/to/labels

TorchScript: `torch.jit.load("models/model.ts")` maps (B, 1, X, Y, Z) images, preprocessed as in
configs/inference.json, to (B, {NUM_CLASSES}, X, Y, Z) logits.
"""


def export_model(model: Path | None, work: Path | None, use_global: bool, out: Path) -> None:
    """`oncofed export`: write the model (`model`, or the site's choice in its work folder `work`:
    site_app/tools/model_choice.py) as a bundle in `out` and say how to run it; BAD_INPUT when the model cannot be
    read or `out` is taken."""
    with errors_as(ExitCode.BAD_INPUT, ModelSourceError, FileExistsError):
        chosen = command_model(model, work, use_global)
        folder = export_bundle(chosen.source, out)
    make_console(stderr=True).print(
        f"Bundle written: {folder} ({chosen.note}: model {chosen.source.sha256}); run it with\n"
        f"  python -m monai.bundle run --config_file {folder}/configs/inference.json --bundle_root {folder}"
        " --dataset_dir IMAGES --output_dir LABELS",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
