"""Quality: federated (FedAvg) vs centralized vs each site alone, with the same budget of epochs over the data.

A fixed-seed 4-site non-IID synthetic federation. Every arm starts from the same initial model and sees every
training case rounds × local-epochs times: (a) centralized on the pooled training cases, (b) each site alone,
(c) federated: per round each site trains local-epochs epochs from the global model, then the coordinator's
SiteFedAvg (server_app.strategy, the project's only strategy) averages the replies. Every model is evaluated on
every site's validation cases. Training and evaluation are the sites' own functions, run in this process.
"""

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from common import (
    ImageLabelPatches,
    coordinator_identity,
    markdown_table,
    out_folder,
    parse,
    parser,
    report,
    run_config,
    torch_device,
)
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from torch.utils.data import ConcatDataset

from data_prep.dataset import training_dataset
from data_prep.synth.federation import write_federation
from models.labels import REGIONS
from models.presets import build_model, get_preset
from models.weights import load_record, to_record
from server_app.federated_loop import ALL_SELECTED
from server_app.strategy import SiteFedAvg
from site_app.aggregates import site_aggregates
from site_app.run_settings import SiteRunSettings
from site_app.site_config import SitePaths, site_folders
from site_app.site_data import SiteCases, load_site_cases
from site_app.site_log import site_logger
from site_app.training import train_epochs
from site_app.validation import CaseEvaluation, validate_cases

N_SITES = 4
DATA_SEED = 0


@dataclass(frozen=True)
class Site:
    paths: SitePaths
    cases: SiteCases

    @property
    def cache(self) -> Path:
        return self.paths.work / "cache"


def load_sites(data: Path, work: Path, settings: SiteRunSettings) -> list[Site]:
    """Each site's split and preprocessed cases, as its ClientApp would load them."""
    sites = []
    for folder in site_folders(data):
        paths = SitePaths(name=folder.name, data=folder, work=work / folder.name)
        cases = load_site_cases(
            paths, settings.pipeline, settings.sim_validation_fraction, site_logger(paths.work)
        )
        sites.append(Site(paths, cases))
    return sites


def initial_model(settings: SiteRunSettings) -> torch.nn.Module:
    """The coordinator's initial global model (same preset and seed as server_app.app)."""
    return build_model(settings.model_preset, seed=settings.seed)


def train(
    model: torch.nn.Module, dataset, epochs: int, settings: SiteRunSettings, device: torch.device
) -> float:
    return train_epochs(
        model,
        dataset,
        epochs=epochs,
        learning_rate=settings.learning_rate,
        batch_size=settings.batch_size,
        device=device,
    )


def centralized(
    sites: list[Site], settings: SiteRunSettings, epochs: int, device: torch.device
) -> torch.nn.Module:
    """One model on the pooled training cases of every site."""
    model = initial_model(settings)
    pooled = ConcatDataset(
        [
            ImageLabelPatches(training_dataset(s.cases.train, settings.pipeline, s.cache, seed=settings.seed))
            for s in sites
        ]
    )
    train(model, pooled, epochs, settings, device)
    return model


def local(site: Site, settings: SiteRunSettings, epochs: int, device: torch.device) -> torch.nn.Module:
    """One model on one site's training cases only."""
    model = initial_model(settings)
    train(
        model,
        training_dataset(site.cases.train, settings.pipeline, site.cache, seed=settings.seed),
        epochs,
        settings,
        device,
    )
    return model


def federated(
    sites: list[Site], settings: SiteRunSettings, rounds: int, device: torch.device
) -> torch.nn.Module:
    """Rounds of local training from the global model (as site_app.app.train does) and SiteFedAvg aggregation."""
    model = initial_model(settings)
    arrays: ArrayRecord = to_record(model)
    strategy = SiteFedAvg(**ALL_SELECTED)
    with coordinator_identity():
        for server_round in range(1, rounds + 1):
            replies = []
            for node_id, site in enumerate(sites, start=101):
                site_model = build_model(settings.model_preset)
                load_record(site_model, arrays)
                dataset = training_dataset(
                    site.cases.train, settings.pipeline, site.cache, seed=settings.seed + server_round
                )
                loss = train(site_model, dataset, settings.local_epochs, settings, device)
                request = Message(RecordDict(), dst_node_id=node_id, message_type="train")
                metrics = MetricRecord({"train-loss": loss, "num-examples": len(site.cases.train)})
                replies.append(
                    Message(
                        RecordDict({"arrays": to_record(site_model), "metrics": metrics}), reply_to=request
                    )
                )
            aggregated, _ = strategy.aggregate_train(server_round, replies)
            if aggregated is None:
                raise RuntimeError(f"round {server_round}: no site update could be aggregated")
            arrays = aggregated
    load_record(model, arrays)
    return model


def train_arms(
    sites: list[Site], settings: SiteRunSettings, rounds: int, device: torch.device
) -> tuple[dict[str, torch.nn.Module], dict[str, float]]:
    """Every arm's model, and the seconds each arm took."""
    epochs = rounds * settings.local_epochs
    arms = {
        "centralized": lambda: {"centralized": centralized(sites, settings, epochs, device)},
        "federated": lambda: {"federated": federated(sites, settings, rounds, device)},
        "local (all sites)": lambda: {
            f"local {s.paths.name}": local(s, settings, epochs, device) for s in sites
        },
    }
    models: dict[str, torch.nn.Module] = {}
    timings = {}
    for arm, train_arm in arms.items():
        clock = time.monotonic()
        models.update(train_arm())
        timings[arm] = time.monotonic() - clock
        print(f"{arm}: trained in {timings[arm]:.0f} s", file=sys.stderr, flush=True)
    return models, timings


def evaluate(
    model: torch.nn.Module, sites: list[Site], settings: SiteRunSettings, device: torch.device
) -> dict[str, list[CaseEvaluation]]:
    """Site name → the model's per-case results on that site's validation cases."""
    results = {}
    for site in sites:
        cases, failed = validate_cases(
            model, site.cases.val, settings.pipeline, REGIONS, device, site_logger(site.paths.work)
        )
        if failed:
            raise RuntimeError(f"{failed} validation case(s) of {site.paths.name} failed; see its site log")
        results[site.paths.name] = cases
    return results


def aggregates(cases: list[CaseEvaluation], seed: int) -> tuple[float, float]:
    """(mean Dice over cases and regions, mean HD95 in mm over regions) via the sites' own aggregation."""
    values = site_aggregates(
        [c.metrics for c in cases], list(REGIONS), seed, min_position_cases=len(cases) + 1
    )
    return float(values["dice-mean"]), float(np.mean([values[f"hd95-{r}-mean"] for r in REGIONS]))


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator; inf when only the denominator is 0, 1 when both are."""
    if denominator == 0:
        return 1.0 if numerator == 0 else float("inf")
    return numerator / denominator


def main() -> None:
    options = parser(__doc__, preset="bench", quick_preset="tiny", device=True)
    options.add_argument(
        "--model", default="tiny", help="model preset (default tiny: the budget of a 2-core CPU)"
    )
    options.add_argument(
        "--rounds", type=int, default=None, help="federated rounds (default 5; 2 with --quick)"
    )
    options.add_argument(
        "--local-epochs",
        type=int,
        default=None,
        help="epochs per round (default: the app's local-epochs; 1 with --quick)",
    )
    options.add_argument("--learning-rate", type=float, default=None, help="default: the app's learning-rate")
    options.add_argument(
        "--patch-size", type=int, default=None, help="default: the model preset's patch size"
    )
    args = parse(options)
    started = time.monotonic()
    device = torch_device(args.device)
    out = out_folder(args.out, "quality")
    logging.getLogger("flwr").setLevel(logging.WARNING)

    model_preset = args.model
    rounds = args.rounds or (2 if args.quick else 5)
    overrides = {
        "model_preset": model_preset,
        "patch_size": args.patch_size or get_preset(model_preset).patch_size,
    }
    if args.local_epochs or args.quick:
        overrides["local_epochs"] = args.local_epochs or 1
    if args.learning_rate:
        overrides["learning_rate"] = args.learning_rate
    settings = SiteRunSettings.from_run_config(run_config(**overrides))
    epochs = rounds * settings.local_epochs

    write_federation(out / "data", n_sites=N_SITES, seed=DATA_SEED, preset=args.preset)
    sites = load_sites(out / "data", out / "work", settings)

    models, timings = train_arms(sites, settings, rounds, device)
    clock = time.monotonic()
    results = {name: evaluate(model, sites, settings, device) for name, model in models.items()}
    timings["evaluation"] = time.monotonic() - clock

    names = [s.paths.name for s in sites]
    scores = {
        model: {site: aggregates(cases, settings.seed) for site, cases in by_site.items()}
        for model, by_site in results.items()
    }
    pooled = {
        model: aggregates([c for cases in by_site.values() for c in cases], settings.seed)
        for model, by_site in results.items()
    }
    dice = markdown_table(
        ["mean Dice", *names, "pooled"],
        [[m, *(scores[m][s][0] for s in names), pooled[m][0]] for m in models],
    )
    hd95 = markdown_table(
        ["mean HD95 (mm)", *names, "pooled"],
        [[m, *(scores[m][s][1] for s in names), pooled[m][1]] for m in models],
    )

    fed_over_local = {s: ratio(scores["federated"][s][0], scores[f"local {s}"][s][0]) for s in names}
    central_over_local = {s: ratio(scores["centralized"][s][0], scores[f"local {s}"][s][0]) for s in names}
    notes = [
        (
            f"Tables: mean Dice over the BraTS regions (wt, tc, et), then mean HD95 (mm) over them; each model on each "
            f"site's validation cases; pooled = all {sum(len(s.cases.val) for s in sites)} validation cases."
        ),
        f"Data: `oncofed synth --preset {args.preset} --sites {N_SITES} --seed {DATA_SEED}`; train/validation cases: "
        + ", ".join(f"{s.paths.name} {len(s.cases.train)}/{len(s.cases.val)}" for s in sites)
        + ".",
        (
            f"Budget: {epochs} epochs over every training case in every arm (federated: {rounds} rounds × "
            f"{settings.local_epochs} local epochs); model {settings.model_preset}, learning rate "
            f"{settings.learning_rate}, batch {settings.batch_size}, patch {settings.pipeline.patch_size}, "
            f"{settings.pipeline.samples_per_case} patches per case per epoch, spacing {settings.pipeline.spacing_mm} mm, "
            f"device {device}."
        ),
        "Strategy: SiteFedAvg (FedAvg weighted by training cases), the only strategy the project offers.",
        "federated/local Dice on each site's own cases: "
        + ", ".join(f"{s} {v:.3f}" for s, v in fed_over_local.items())
        + "; centralized/local: "
        + ", ".join(f"{s} {v:.3f}" for s, v in central_over_local.items())
        + ".",
        "Time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + ".",
    ]
    ratios = {
        "fed_over_central": ratio(pooled["federated"][0], pooled["centralized"][0]),
        "fed_over_local_min": min(fed_over_local.values()),
    }
    report("quality", args.results, [dice, hd95], ratios, notes, started)


if __name__ == "__main__":
    main()
