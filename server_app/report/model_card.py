"""model_card.md: what the federation's model is for, what it was trained on and how well it did where.

Written next to report.html (which links it) at the end of every run and by ``oncofed report``. Built only from
the run folder (report_data's content, summary.json, app.json and the checkpoints): the training data is
described by the sites' aggregates alone, never by a case.
"""

from importlib.metadata import version
from pathlib import Path

import torch

from models.model_hash import weights_sha256
from models.shared.run_config import LOCAL_NORM
from models.shared.wire import Overview, Status
from server_app.app_identity import read_app_identity
from server_app.report.content import TRAINING_SETTINGS

MODEL_CARD_FILE = "model_card.md"
LABELS = "0 background, 1 necrotic core, 2 edema, 3 enhancing tumor"


def model_card(run_dir: Path, data: dict) -> str:
    """The card's Markdown; ``data`` is report_data(run_dir)."""
    run, methods = data["run"], data["methods"]
    sections = [
        f"# Model card: {run['folder']}",
        "**Research use only. Not for diagnosis, treatment or any clinical decision.**",
        _model(run_dir, data),
        INTENDED_USE,
        _training_data(data),
        _validation(data),
        _strategy(methods),
        _limitations(data),
        _software(run_dir, methods),
    ]
    return "\n\n".join(sections) + "\n"


def model_hashes(run_dir: Path) -> dict[str, dict[str, object]]:
    """models/<name>.pt -> {"round", "sha256"} (models.model_hash, equal for an exported bundle of it)."""
    hashes = {}
    for path in sorted((run_dir / "models").glob("*.pt")):
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            hashes[f"models/{path.name}"] = {
                "round": payload["meta"].get("round"),
                "sha256": weights_sha256(payload["state_dict"]),
            }
        except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError) as e:
            hashes[f"models/{path.name}"] = {"round": None, "sha256": f"unreadable ({type(e).__name__})"}
    return hashes


def _model(run_dir: Path, data: dict) -> str:
    model, training = data["methods"]["model"], data["methods"]["training"]
    rows = [
        f"| `{name}` | {entry['round']} | `{entry['sha256']}` |"
        for name, entry in model_hashes(run_dir).items()
    ]
    best = data["run"].get("best") or {}
    architecture = (
        f"{model['architecture']}, preset `{model['preset']}`: channels {model['channels']}, strides"
        f" {model['strides']}, {model['residual_units']} residual units, {model['parameters']:,} parameters."
        if model
        else "not recorded."
    )
    return "\n".join(
        [
            "## Model",
            f"- Architecture: {architecture}",
            (
                "- Input: one single-channel 3D CT or MR volume, any orientation and voxel size; reoriented to RAS,"
                f" resampled to {training.get('spacing-mm', '?')} mm isotropic, cropped to the head, z-scored over the"
                f" head; sliding-window inference with {training.get('patch-size', '?')}³-voxel windows."
            ),
            f"- Output: a label map on the input's grid: {LABELS} (BraTS convention).",
            (
                f"- Best round: {best.get('round', '—')} (`models/best.pt`, chosen on the validation cases by"
                f" this rule: {best.get('rule') or 'the highest pooled mean Dice'}); last round: `models/final.pt`"
                " (a run that stopped early has only `models/latest.pt`)."
            ),
            _use(training),
            "",
            "| checkpoint | round | weights SHA-256 |",
            "|---|---|---|",
            *rows,
        ]
    )


def _use(training: dict) -> str:
    if training.get(LOCAL_NORM.key) is True:
        return (
            "- Site-local normalization (`local-norm`): each site kept its own norm layers, so `models/*.pt` hold"
            " the initial ones, a model no site validated; `site predict` and `oncofed export` refuse them. Each"
            " site uses the model it validated with its own norm layers, `WORK/models/global-latest.pt`."
        )
    return "- Use it with `oncofed site predict --model RUN/models/final.pt` or `oncofed export`."


INTENDED_USE = """## Intended use
- Research on 3D brain-tumor sub-region segmentation (necrotic core, edema, enhancing tumor) in CT or MR volumes
  like those of the training sites.
- Draft segmentations for expert review, volume estimates for research cohorts, and the study of federated
  training itself.

## Not intended use
- Diagnosis, treatment planning, follow-up decisions or any other clinical use: the model has no clinical
  validation and no regulatory clearance.
- Use without an expert reviewing every segmentation.
- Images unlike the training data: other body regions, modalities, contrast phases, paediatric patients,
  post-operative anatomy, or scanners and protocols none of the sites used."""


def _training_data(data: dict) -> str:
    rows = []
    for row in data["data_overview"]:
        described = row.get("described") or {}
        rows.append(
            f"| {row['site']} | {_v(row.get('total_cases'))} | {_v(described.get(Overview.N_CASES_EXCLUDED))} |"
            f" {_v(row.get('training_cases'))} | {_v(row.get('validation_cases'))} |"
        )
    return "\n".join(
        [
            "## Training data",
            (
                "Described by each site's aggregates only (case counts; no single-case value such as a spacing or"
                " size range is released); no image, label, case or patient identifier left any site."
            ),
            "",
            "| site | usable cases | excluded | training cases | validation cases |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )


def _validation(data: dict) -> str:
    regions = data["regions"]
    head = " | ".join(f"Dice {r['name'].upper()} ({r['title']}, labels {r['labels']})" for r in regions)
    rows = []
    for site in data["sites"]:
        if site["status"] != Status.REPORTED:
            rows.append(f"| {site['name']} | {site['round']} | — | {site['note']} |" + " |" * len(regions))
            continue
        m = site["metrics"]
        cells = " | ".join(_ci(m, f"dice-{r['name']}") for r in regions)
        rows.append(
            f"| {site['name']} | {site['round']} | {site['n_cases']} |"
            f" {_num(m.get('dice-mean'))} [{_num(m.get('dice-mean-ci-low'))}, {_num(m.get('dice-mean-ci-high'))}]"
            f" | {cells} |"
        )
    last = next((p for p in data["pooled"] if p["round"] == data["run"]["last_round"]), {})
    pooled = (
        f"Pooled over the reporting sites at round {last['round']}: mean Dice {_num(last['dice-mean'])} over"
        f" {last.get('n-cases')} cases (case-weighted; no interval: CIs do not pool exactly)."
        if "dice-mean" in last
        else "No site reported numbers at the last round."
    )
    return "\n".join(
        [
            "## Validation per site",
            (
                "Each site's last validated round, on its own held-out validation cases, measured on each case's"
                " stored grid: mean [95 % percentile-bootstrap CI of the mean]."
            ),
            "",
            f"| site | round | cases | mean Dice over regions | {head} |",
            "|---|---|---|---|" + "---|" * len(regions),
            *rows,
            "",
            pooled,
        ]
    )


def _strategy(methods: dict) -> str:
    training = methods["training"]
    settings = [
        f"| `{key}` | {training[key]} |" for key in (s.key for s in TRAINING_SETTINGS) if key in training
    ]
    conventions = methods["conventions"]
    return "\n".join(
        [
            "## Strategy and settings",
            (
                f"{methods['aggregation']}. Every round: local training at each site, aggregation, then validation of"
                " the new global model at every site (round 0 validates the initial model)."
            ),
            "",
            "| run setting | value |",
            "|---|---|",
            *settings,
            "",
            (
                f"Metric conventions: regions {conventions.get('eval-regions', '—')}; HD95 empty-mask penalty"
                f" {conventions.get('hd95-penalty-mm', '—')} mm; surface Dice tolerance"
                f" {conventions.get('nsd-tolerance-mm', '—')} mm; bootstrap {conventions.get('bootstrap-resamples', '—')}"
                " resamples. Exact settings: report.html, Methods."
            ),
        ]
    )


def _limitations(data: dict) -> str:
    notes = [
        (
            "Synthetic data: a run on `oncofed synth` phantoms (every simulation in this project's tests and demo)"
            " has never seen a real image or tumor; its numbers say nothing about real patients."
        ),
        (
            "Small sites: a site with few validation cases gives wide (and, below about 10 cases, too narrow)"
            " intervals; a site below its own minimum reports nothing, so it is not represented above."
        ),
        (
            "Metric conventions: Dice and HD95 depend on the region definition, the empty-mask rule and the voxel"
            " grid (see Strategy and settings); compare only with numbers computed the same way."
        ),
        *data["limitations"],
    ]
    return "## Limitations\n" + "\n".join(f"- {note}" for note in notes)


def _software(run_dir: Path, methods: dict) -> str:
    app = read_app_identity(run_dir)
    coordinator = ", ".join(f"{k} {v}" for k, v in sorted(methods["coordinator_software"].items()))
    sites = [
        f"- {site}: {', '.join(versions)}" for site, versions in sorted(methods["site_software"].items())
    ]
    return "\n".join(
        [
            "## Software and hashes",
            (
                f"- App that trained the model: `{app.get('fab_id') or 'unknown'}` version"
                f" {app.get('fab_version') or 'unknown'}, FAB SHA-256 `{app.get('fab_sha256') or 'not recorded'}`"
                " (the Flower app bundle the coordinator and every site ran)."
            ),
            (
                "- Model weights: the SHA-256 in the Model table (also written into every DICOM-SEG and predictions.json"
                " made with the model, and into an exported bundle)."
            ),
            f"- Coordinator: {coordinator}.",
            *sites,
            f"- This card: oncofed {version('oncofed')}.",
        ]
    )


def _ci(metrics: dict, key: str) -> str:
    return f"{_num(metrics.get(f'{key}-mean'))} [{_num(metrics.get(f'{key}-ci-low'))}, {_num(metrics.get(f'{key}-ci-high'))}]"


def _num(value: object, digits: int = 3) -> str:
    return "—" if value is None else f"{float(value):.{digits}f}"  # type: ignore[arg-type]


def _v(value: object) -> str:
    return "—" if value is None else str(value)
