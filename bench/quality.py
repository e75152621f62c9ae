"""Quality: federated strategies vs centralized vs each site alone, with the same budget of epochs over the data.

A fixed-seed non-IID synthetic federation (`--preset`: bench's 4 sites, consortium's 6 of 40 to 3 cases,
anatomy's 3 MNI152 sites). Every arm starts from the same initial model and sees every training case
rounds × local-epochs times: (a) centralized on the pooled training cases, (b) each site alone (the sites' own
local-only baselines, run config `local-baseline`, trained inside the fedavg run with the same per-round budget),
(c) federated: every strategy (fedavg, fedprox, fedadam, fedyogi) with and without `local-norm` (--quick: fedavg
only), plus fedavg again with the same seed (repeatability), with float16 transport, and with central DP, and
(d) federated personalized: each site's personalized model (run config `personalize-epochs`: the global model
fine-tuned on its own training cases, kept at the site) on its own validation cases.
Federated runs are the real ServerApp and ClientApps in this process (bench/in_process.py), so their per-round
validation, bytes and ε are those a real run records. Every model is evaluated on every site's validation cases
(a local-norm run: each site's own norm layers on its own cases). --plateau also measures every model on held-out
cases of each site's own profile that no site trains or validates on (bench/held_out.py, `--test-cases`).
"""

import argparse
import copy
import itertools
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from common import (
    ImageLabelPatches,
    markdown_table,
    out_folder,
    parse,
    parser,
    report,
    run_config,
    torch_device,
)
from held_out import HeldOut, evaluate_held_out, kept_models, write_and_load
from in_process import run_federation
from torch.utils.data import ConcatDataset

from data_prep.dataset import training_dataset
from data_prep.synth.federation import write_federation
from data_prep.synth.profiles import default_sites
from models.presets import MODEL_PRESETS, build_model, get_preset
from models.shared.labels import REGIONS
from models.shared.run_config import MODEL_PRESET, SPACING_MM
from models.shared.wire import LOCAL_ONLY_PREFIX, PERSONALIZED_PREFIX, baseline_key
from models.weights import load_checkpoint
from site_app.disclosure.aggregates import site_aggregates
from site_app.learning.local_baseline import MODEL_FILE
from site_app.learning.personalize import LATEST_MODEL as PERSONALIZED_LATEST
from site_app.learning.run_state import RUNS_FOLDER, load_state
from site_app.learning.site_data import SiteCases, load_site_cases
from site_app.learning.training import train_epochs
from site_app.learning.validation import CaseEvaluation, validate_cases
from site_app.learning.work_records import LATEST_MODEL as GLOBAL_LATEST
from site_app.settings.identity import SitePaths, site_folders
from site_app.settings.run_settings import SiteRunSettings
from site_app.settings.secret import provide_simulated_secret
from site_app.site_log import site_logger

DATA_SEED = 0
"""Default `--data-seed`: the synthetic federation's `oncofed synth --seed`."""
STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi")
QUICK_STRATEGIES = ("fedavg",)
"""--quick runs these with and without local-norm (and the rerun, float16 and DP arms), not every strategy."""
PERSONALIZE_EPOCHS = 2
"""Default `personalize-epochs` of the personalized arm: each site fine-tunes the global model this many epochs
on its own training cases at each validation (the app's default local epochs)."""
POSTPROCESS_MM3 = 100.0
"""Post-processing measured on the best federated model: predicted tumor components below this volume removed."""
PLATEAU_GAIN = 0.01
"""The plateau budget: the first doubling of centralized's epochs that adds less than this pooled Dice."""
HELD_OUT_CASES = 20
"""Default `--test-cases` of --plateau: held-out cases per site (bench/held_out.py) every model is measured on
again, so that a small site's ratio is not one or two validation cases' Dice."""
PLATEAU_CONFIGS = ("fedavg", "fedavg + local-norm")
"""Default federated configurations at the plateau budget: the app's defaults, and the same with FedBN-style local
norm layers (the best of the every-strategy screen on the phantom presets)."""
BENCH_SPACING_MM, BENCH_PATCH_SIZE = 3.0, 24
"""The benchmark's grid: 3 mm voxels (the app's default is 2 mm) and 24³ patches, a 72 mm field of view (32³ at
2 mm: 64 mm). An epoch is a fixed number of patches per case, so only the smaller patch cuts training time and only
the coarser spacing cuts validation time; together they fit the plateau budget's 3-seed run in 2 hours on 2 cores
(at 2 mm with 32³ patches it needed ≈ 5 hours)."""


def grid_config(rounds: int, quick: bool, **overrides: object) -> dict[str, object]:
    """The app's run settings on the benchmark's grid (BENCH_SPACING_MM, BENCH_PATCH_SIZE) for an in-process run of
    `rounds` rounds, every site reporting and training from one case, no tracking; 1 local epoch with --quick."""
    return run_config(
        patch_size=BENCH_PATCH_SIZE,
        spacing_mm=BENCH_SPACING_MM,
        num_server_rounds=rounds,
        sim_min_report_cases=1,
        sim_min_train_cases=1,
        tracking_uri="none",
        **({"local_epochs": 1} if quick else {}),
        **overrides,
    )


DP_NOISE, DP_CLIP = 0.5, 0.5
"""Central DP arm: noise multiplier and clipping norm (ε at δ = the run config's dp-delta is printed)."""


@dataclass(frozen=True)
class Site:
    paths: SitePaths
    cases: SiteCases

    @property
    def cache(self) -> Path:
        return self.paths.work / "cache"


@dataclass(frozen=True)
class FederatedArm:
    name: str
    overrides: dict[str, object]


@dataclass
class FederatedResult:
    """One federated run: pooled and per-site mean Dice per round (from its run folder), bytes, ε, seconds."""

    arm: FederatedArm
    run_dir: Path
    pooled: dict[int, float]
    sites: dict[str, float]
    """site → mean Dice of the last round's model on its own validation cases."""
    local: dict[str, float]
    """site → its local-only baseline's mean Dice on its own cases (fedavg arm only)."""
    personalized: dict[str, float]
    """site → its personalized model's mean Dice on its own cases, last round (runs with personalize-epochs)."""
    val_cases: dict[str, int]
    """site → validation cases it reported on in the last round."""
    bytes_per_round: float
    epsilon: float | None
    seconds: float

    @property
    def final(self) -> float:
        return self.pooled[max(self.pooled)]

    @property
    def personalized_pooled(self) -> float:
        """The personalized models' mean Dice over every validation case (each site's model on its own cases)."""
        total = sum(self.val_cases[s] for s in self.personalized)
        return sum(v * self.val_cases[s] for s, v in self.personalized.items()) / total

    def max_drop(self, after: int = 2) -> float:
        """Largest fall of the pooled Dice from one round to the next, counting rounds after `after`."""
        rounds = sorted(self.pooled)
        falls = [self.pooled[a] - self.pooled[b] for a, b in itertools.pairwise(rounds) if b > after]
        return max([0.0, *falls])


def federated_arms(quick: bool, personalize_epochs: int = PERSONALIZE_EPOCHS) -> list[FederatedArm]:
    """Every configuration (the strategies with and without local-norm first), then the rerun, float16 and DP
    arms; fedavg's sites also train their local-only baselines and personalize (its global model is unchanged)."""
    arms = []
    for strategy in QUICK_STRATEGIES if quick else STRATEGIES:
        for local_norm in (False, True):
            name = strategy + (" + local-norm" if local_norm else "")
            overrides: dict[str, object] = {"strategy": strategy, "local-norm": local_norm}
            if strategy == "fedavg" and not local_norm:
                overrides["local-baseline"] = True
                overrides["personalize-epochs"] = personalize_epochs
            arms.append(FederatedArm(name, overrides))
    arms += [
        FederatedArm("fedavg (rerun)", {"strategy": "fedavg", "local-baseline": True}),
        FederatedArm("fedavg float16", {"strategy": "fedavg", "transport-dtype": "float16"}),
        FederatedArm(
            "fedavg DP",
            {"strategy": "fedavg", "dp-noise-multiplier": DP_NOISE, "dp-clipping-norm": DP_CLIP},
        ),
    ]
    return arms


def load_sites(data: Path, work: Path, settings: SiteRunSettings) -> list[Site]:
    """Each site's split and preprocessed cases, as its simulated ClientApp would load them: a site's secret, and
    so its validation split, derives from the run seed and its name, so a rerun validates on the same cases."""
    sites = []
    for folder in site_folders(data):
        paths = SitePaths(name=folder.name, data=folder, work=work / folder.name)
        provide_simulated_secret(paths.work, settings.seed, folder.name)
        cases = load_site_cases(
            paths, settings.pipeline, settings.sim_validation_fraction, site_logger(paths.work)
        )
        sites.append(Site(paths, cases))
    return sites


def centralized(
    sites: list[Site],
    settings: SiteRunSettings,
    epochs: int,
    device: torch.device,
    after_epoch: Callable[[torch.nn.Module, int], bool] | None = None,
) -> torch.nn.Module:
    """One model on the pooled training cases of `sites` (same initial model as the federation's); with one site,
    that site alone. `after_epoch(model, n)` as in train_epochs."""
    model = build_model(settings.model_preset, seed=settings.seed)
    pooled = ConcatDataset(
        [
            ImageLabelPatches(training_dataset(s.cases.train, settings.pipeline, s.cache, seed=settings.seed))
            for s in sites
        ]
    )
    train_epochs(
        model,
        pooled,
        epochs=epochs,
        learning_rate=settings.learning_rate,
        batch_size=settings.batch_size,
        device=device,
        seed=settings.seed,
        after_epoch=None if after_epoch is None else lambda epoch: after_epoch(model, epoch),
    )
    return model


def run_arm(
    arm: FederatedArm, config: dict[str, object], data: Path, work: Path, out: Path, seed: int
) -> FederatedResult:
    clock = time.monotonic()
    run_dir = out / "runs" / f"{arm.name.replace(' ', '_').replace('+', 'and')}-seed{seed}"
    run_federation(data, run_dir, work, {**config, **arm.overrides, "seed": seed}, len(site_folders(data)))
    seconds = time.monotonic() - clock
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = max(r["round"] for r in records)
    final = {r["site"]: r for r in records if r["round"] == last}
    local = {
        site: r["metrics"][baseline_key(LOCAL_ONLY_PREFIX, "dice", None, "mean")]
        for site, r in final.items()
        if baseline_key(LOCAL_ONLY_PREFIX, "dice", None, "mean") in r["metrics"]
    }
    personalized_key = baseline_key(PERSONALIZED_PREFIX, "dice", None, "mean")
    personalized = {
        site: r["metrics"][personalized_key] for site, r in final.items() if personalized_key in r["metrics"]
    }
    per_round: dict[int, int] = {}
    for record in records:
        if record["round"]:
            per_round[record["round"]] = per_round.get(record["round"], 0) + sum(record["bytes"].values())
    epsilons = [r["privacy"]["epsilon"] for r in records if r.get("privacy")]
    pooled_last = (
        summary["weighted_mean"][str(last)]["dice-mean"] if str(last) in summary["weighted_mean"] else None
    )
    print(
        f"{arm.name} (seed {seed}): {seconds:.0f} s, last-round pooled Dice {pooled_last}",
        file=sys.stderr,
        flush=True,
    )
    return FederatedResult(
        arm=arm,
        run_dir=run_dir,
        pooled={int(k): float(v["dice-mean"]) for k, v in summary["weighted_mean"].items()},
        sites={site: r["metrics"]["dice-mean"] for site, r in final.items()},
        local=local,
        personalized=personalized,
        val_cases={site: int(r["n_cases"]) for site, r in final.items()},
        bytes_per_round=float(np.mean(list(per_round.values()))),
        epsilon=max(epsilons) if epsilons else None,
        seconds=seconds,
    )


def local_only_models(
    run: FederatedResult, work: Path, sites: list[Site], preset: str
) -> dict[str, torch.nn.Module]:
    """The local-only baselines the sites trained during `run` (from their work folders)."""
    models = {}
    for site in sites:
        found = sorted(
            (work / site.paths.name / RUNS_FOLDER).glob(f"*/{MODEL_FILE}"), key=lambda p: p.stat().st_mtime
        )
        if not found:
            raise RuntimeError(f"{site.paths.name} kept no local-only model in {run.run_dir}; did it train?")
        saved = load_state(found[-1])
        model = build_model(preset)
        model.load_state_dict(saved["state_dict"])
        models[f"local {site.paths.name}"] = model
    return models


def global_model(run: FederatedResult, preset: str) -> torch.nn.Module:
    model = build_model(preset)
    model.load_state_dict(load_checkpoint(run.run_dir / "models" / "final.pt")[0])
    return model


def evaluate(
    model: torch.nn.Module,
    sites: list[Site],
    settings: SiteRunSettings,
    device: torch.device,
    min_lesion_mm3: float = 0.0,
) -> dict[str, list[CaseEvaluation]]:
    """Site name → the model's per-case results on that site's validation cases."""
    results = {}
    for site in sites:
        cases, failed = validate_cases(
            model,
            site.cases.val,
            settings.pipeline,
            REGIONS,
            device,
            site_logger(site.paths.work),
            min_lesion_mm3,
        )
        if failed:
            raise RuntimeError(f"{failed} validation case(s) of {site.paths.name} failed; see its site log")
        results[site.paths.name] = cases
    return results


def aggregates(cases: list[CaseEvaluation], seed: int) -> tuple[float, float, int]:
    """(mean Dice over cases and regions, mean HD95 in mm over regions, false lesions) via the sites' aggregation."""
    values = site_aggregates(
        [c.metrics for c in cases], list(REGIONS), seed, min_position_cases=len(cases) + 1
    )
    return (
        float(values["dice-mean"]),
        float(np.mean([values[f"hd95-{r}-mean"] for r in REGIONS])),
        int(sum(values[f"lesions-fp-{r}"] for r in REGIONS)),
    )


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator; inf when only the denominator is 0, 1 when both are."""
    if denominator == 0:
        return 1.0 if numerator == 0 else float("inf")
    return numerator / denominator


def over_local_only(per_site: dict[str, dict[str, list[float]]], row: str) -> dict[str, float]:
    """Site → `row`'s mean Dice at that site over the local-only arm's (means over seeds; `per_site[row][site]`
    holds one value per seed)."""
    return {
        site: ratio(statistics.mean(values), statistics.mean(per_site["local-only"][site]))
        for site, values in per_site[row].items()
    }


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f}" + (
        f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    )


@dataclass
class PlateauSearch:
    """Centralized (the run seed) evaluated after E, 2E, 4E … epochs of one training run."""

    pooled: dict[int, float]
    """epochs → pooled mean Dice."""
    sites: dict[int, dict[str, float]]
    """epochs → site → mean Dice on its own validation cases."""
    epochs: int
    """The plateau budget: the epochs whose doubling from epochs/2 added < PLATEAU_GAIN (or the last tried)."""
    reached: bool
    seconds: float
    states: dict[int, dict[str, torch.Tensor]]
    """epochs → the model's weights then."""


def plateau_search(
    sites: list[Site], settings: SiteRunSettings, start: int, most: int, device: torch.device
) -> PlateauSearch:
    """Train centralized once, evaluating it after start·2^k epochs, until a doubling adds < PLATEAU_GAIN."""
    clock = time.monotonic()
    pooled: dict[int, float] = {}
    per_site: dict[int, dict[str, float]] = {}
    states: dict[int, dict[str, torch.Tensor]] = {}

    def snapshot(model: torch.nn.Module, epoch: int) -> bool:
        if epoch < start or epoch % start or (epoch // start) & (epoch // start - 1):
            return False  # not start·2^k
        states[epoch] = copy.deepcopy(model.state_dict())
        pooled[epoch], per_site[epoch] = mean_dice(evaluate(model, sites, settings, device), settings.seed)
        gain = pooled[epoch] - pooled.get(epoch // 2, float("-inf"))
        print(
            f"centralized {epoch} epochs: pooled Dice {pooled[epoch]:.4f} ({time.monotonic() - clock:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        return gain < PLATEAU_GAIN

    doublings = max(0, (most // start).bit_length() - 1)
    centralized(sites, settings, start * 2**doublings, device, after_epoch=snapshot)
    last = max(pooled)
    reached = last // 2 in pooled and pooled[last] - pooled[last // 2] < PLATEAU_GAIN
    return PlateauSearch(pooled, per_site, last, reached, time.monotonic() - clock, states)


def personalized_name(arm: str) -> str:
    """The row of an arm's personalized models."""
    return f"{arm} · personalized"


def model_note(settings: SiteRunSettings) -> str:
    """The entry's model and grid: which UNet every arm trained, on which voxels and patches."""
    spec = get_preset(settings.model_preset)
    return (
        f"Model: `{settings.model_preset}` (UNet channels {'-'.join(map(str, spec.channels))}, "
        f"{len(spec.strides)} halvings, {spec.num_res_units} residual unit(s)); every arm at "
        f"{settings.pipeline.spacing_mm:g} mm on {settings.pipeline.patch_size}³ patches."
    )


def mean_dice(by_site: dict[str, list[CaseEvaluation]], seed: int) -> tuple[float, dict[str, float]]:
    """(mean Dice over every case of every site, site → mean Dice over its cases)."""
    pooled = aggregates([c for cases in by_site.values() for c in cases], seed)[0]
    return pooled, {name: aggregates(cases, seed)[0] for name, cases in by_site.items()}


def site_ratios(per_site: dict[str, dict[str, list[float]]], best: str) -> dict[str, dict[str, float]]:
    """ "personalized", "global" (`best`'s rows) and "centralized" → site → that model over the site's local-only
    model (row → site → one value per seed)."""
    rows = {"personalized": personalized_name(best), "global": best, "centralized": "centralized"}
    return {kind: over_local_only(per_site, row) for kind, row in rows.items()}


def plateau_ratios(
    pooled: dict[str, list[float]], by_site: dict[str, dict[str, float]], best: str
) -> dict[str, float]:
    """The headline ratios of `best` (an arm's row) against centralized and each site alone, from one set of figures
    (row → one pooled value per seed; `by_site`: site_ratios of the same figures)."""
    central = statistics.mean(pooled["centralized"])
    return {
        "fed_over_central": ratio(statistics.mean(pooled[best]), central),
        "fed_over_local_min": min(by_site["personalized"].values()),
        "global_over_local_min": min(by_site["global"].values()),
        "central_over_local_min": min(by_site["centralized"].values()),
        "personalized_over_central": ratio(statistics.mean(pooled[personalized_name(best)]), central),
    }


class HeldOutScores:
    """Each row's figures on the held-out cases (bench/held_out.py), kept like the validation figures: row → one
    pooled value per seed, row → site → one value per seed."""

    def __init__(self, cases: HeldOut, rows: list[str], settings: SiteRunSettings, device: torch.device):
        self.cases, self.settings, self.device = cases, settings, device
        self.pooled: dict[str, list[float]] = {row: [] for row in rows}
        self.per_site: dict[str, dict[str, list[float]]] = {row: {s: [] for s in cases.items} for row in rows}

    def measure(self, row: str, models: dict[str, torch.nn.Module], seed: int) -> None:
        """`row`'s models (site → the model that site would use) on every site's held-out cases."""
        results = evaluate_held_out(models, self.cases, self.settings, self.device)
        dice = {site: aggregates(cases, seed)[0] for site, cases in results.items()}
        self.pooled[row].append(self.cases.pooled(dice))
        for site, value in dice.items():
            self.per_site[row][site].append(value)


def plateau_run(
    args: argparse.Namespace,
    config: dict[str, object],
    settings: SiteRunSettings,
    sites: list[Site],
    data: Path,
    work: Path,
    out: Path,
    device: torch.device,
    started: float,
) -> None:
    """The plateau budget: find it with centralized, then centralized, each site alone and the chosen federated
    configurations there, `args.seeds` seeds each (federated: plateau epochs / local epochs rounds)."""
    names = [s.paths.name for s in sites]
    start = settings.local_epochs * int(config["num-server-rounds"])
    search = plateau_search(sites, settings, start, args.max_epochs, device)
    budget = search.epochs if args.budget_epochs is None else min(search.epochs, args.budget_epochs)
    if budget not in search.pooled:
        raise SystemExit(
            f"error: --budget-epochs {args.budget_epochs}: choose one of {sorted(search.pooled)}"
        )
    rounds = -(-budget // settings.local_epochs)
    plateau_config = {**config, "num-server-rounds": rounds}
    by_name = {arm.name: arm for arm in federated_arms(False)}
    unknown = [name for name in args.configs if name not in by_name]
    if unknown:
        raise SystemExit(f"error: --configs {unknown}: not a federated arm; choose from {list(by_name)}")
    arms = [
        # the local-only arm trains in this process, so the sites need not train their baselines in the run too
        FederatedArm(
            name,
            {
                **by_name[name].overrides,
                "local-baseline": False,
                "personalize-epochs": args.personalize_epochs,
            },
        )
        for name in args.configs
    ]

    base_seed = settings.seed
    seeds = list(range(base_seed, base_seed + args.seeds))
    pooled: dict[str, list[float]] = {
        "centralized": [],
        **{a.name: [] for a in arms},
        **{personalized_name(a.name): [] for a in arms},
        "local-only": [],
    }
    per_site: dict[str, dict[str, list[float]]] = {k: {n: [] for n in names} for k in pooled}
    held = None
    if args.test_cases:
        own_cases = {s.paths.name: len(s.cases.train) + len(s.cases.val) for s in sites}
        held_out = write_and_load(out, args.preset, args.data_seed, args.test_cases, own_cases, settings)
        held = HeldOutScores(held_out, list(pooled), settings, device)
    runs: list[FederatedResult] = []
    seconds = {"centralized": search.seconds, "local-only": 0.0}
    for seed in seeds:
        seeded = SiteRunSettings.from_run_config({**config, "seed": seed})
        if seed == base_seed:
            central_pooled, central_sites = search.pooled[budget], search.sites[budget]
            model = build_model(settings.model_preset)
            model.load_state_dict(search.states[budget])
        else:
            clock = time.monotonic()
            model = centralized(sites, seeded, budget, device)
            seconds["centralized"] += time.monotonic() - clock
            central_pooled, central_sites = mean_dice(evaluate(model, sites, seeded, device), seed)
        pooled["centralized"].append(central_pooled)
        for name in names:
            per_site["centralized"][name].append(central_sites[name])
        clock = time.monotonic()
        alone = {s.paths.name: centralized([s], seeded, budget, device) for s in sites}
        seconds["local-only"] += time.monotonic() - clock
        if held is not None:
            held.measure("centralized", dict.fromkeys(names, model), seed)
            held.measure("local-only", alone, seed)
        # each site's validation cases by its own local model
        own = {s.paths.name: evaluate(alone[s.paths.name], [s], seeded, device)[s.paths.name] for s in sites}
        local_pooled, local_sites = mean_dice(own, seed)
        pooled["local-only"].append(local_pooled)
        for name in names:
            per_site["local-only"][name].append(local_sites[name])
        print(
            f"seed {seed}: centralized {central_pooled:.4f}, local-only {local_pooled:.4f}"
            f" ({time.monotonic() - started:.0f} s since start)",
            file=sys.stderr,
            flush=True,
        )
        for arm in arms:
            run = run_arm(arm, plateau_config, data, work, out, seed)
            runs.append(run)
            pooled[arm.name].append(run.final)
            pooled[personalized_name(arm.name)].append(run.personalized_pooled)
            for name in names:
                per_site[arm.name][name].append(run.sites[name])
                per_site[personalized_name(arm.name)][name].append(run.personalized[name])
            if held is not None:  # the models the sites kept from this run
                preset = settings.model_preset
                held.measure(arm.name, kept_models(work, names, preset, GLOBAL_LATEST), seed)
                held.measure(
                    personalized_name(arm.name), kept_models(work, names, preset, PERSONALIZED_LATEST), seed
                )

    best = max(arms, key=lambda a: statistics.mean(pooled[a.name])).name
    on_validation = site_ratios(per_site, best)
    n_val = {s.paths.name: len(s.cases.val) for s in sites}
    search_table = markdown_table(
        ["centralized epochs", "pooled mean Dice", "gain over half the epochs"],
        [
            [e, d, "—" if e // 2 not in search.pooled else d - search.pooled[e // 2]]
            for e, d in sorted(search.pooled.items())
        ],
    )

    def seeds_table(
        title: str, rows: dict[str, list[float]], sites: dict[str, dict[str, list[float]]]
    ) -> str:
        return markdown_table(
            [title, *(f"seed {s}" for s in seeds), "mean ± sd", *(f"{n} (mean)" for n in names)],
            [[k, *v, mean_sd(v), *(statistics.mean(sites[k][n]) for n in names)] for k, v in rows.items()],
        )

    tables = [search_table, seeds_table("pooled mean Dice", pooled, per_site)]
    if held is not None:
        tables.append(seeds_table("held-out pooled mean Dice", held.pooled, held.per_site))
    rounds_table = markdown_table(
        ["federated run", "final pooled Dice", "best round (Dice)", "max drop after r2", "s"],
        [
            [
                run.run_dir.name,
                run.final,
                "{} ({:.4f})".format(*max(run.pooled.items(), key=lambda item: item[1])),
                run.max_drop(),
                f"{run.seconds:.0f}",
            ]
            for run in runs
        ],
    )
    notes = [
        model_note(settings),
        f"Data: `oncofed synth --preset {args.preset} --sites {len(sites)} --seed {args.data_seed}`.",
        f"Plateau search: centralized (seed {base_seed}) trained once and evaluated on every site's validation "
        f"cases after {start}·2^k epochs; the plateau budget is the first doubling that adds < {PLATEAU_GAIN} "
        + (
            f"pooled Dice: **{search.epochs} epochs**."
            if search.reached
            else f"pooled Dice: not reached by {search.epochs} epochs (--max-epochs {args.max_epochs})."
        )
        + (
            f" **The arms below ran at {budget} epochs (--budget-epochs), not at the plateau budget.**"
            if budget != search.epochs
            else ""
        ),
        (
            f"At {budget} epochs: federated {rounds} rounds × {settings.local_epochs} local epochs; centralized and "
            "each site alone (from the same initial model, its own training cases only, evaluated on its own "
            "validation cases) trained for the same epochs in the benchmark's process; seeds "
            f"{seeds[0]}…{seeds[-1]} (the seed sets the initial model, batch order and augmentation of every arm)."
        ),
        (
            "Local-only pooled = every validation case, each by its own site's local model; a local-norm arm's "
            "per-site Dice is the site's model with its own norm layers on its own cases (from the run's last round)."
        ),
        f"Best federated configuration (mean over seeds): {best}; per site, its personalized models over local-only "
        "(means over seeds): "
        + ", ".join(f"{n} {v:.3f}" for n, v in on_validation["personalized"].items())
        + "; its global model over local-only: "
        + ", ".join(f"{n} {v:.3f}" for n, v in on_validation["global"].items())
        + "; centralized over local-only (what one model trained on every site's cases gains at each site: the"
        " reference for the global model's ratios, which it rarely exceeds): "
        + ", ".join(f"{n} {v:.3f}" for n, v in on_validation["centralized"].items())
        + ".",
        (
            f"Personalized rows: each site's personalized model (the global model fine-tuned {args.personalize_epochs}"
            " epoch(s) on its own training cases, personalize-epochs, from the last round's global model) on its own"
            " validation"
            " cases; pooled = weighted by validation cases. Validation cases per site: "
            + ", ".join(f"{n} {v}" for n, v in n_val.items())
            + " (a site's figure from 1 or 2 cases is one or two cases' Dice: read the per-site columns with that"
            " in mind)."
        ),
        (
            f"Time (s): plateau search {search.seconds:.0f}, centralized and local-only at the budget "
            f"{seconds['centralized'] - search.seconds + seconds['local-only']:.0f}, federated runs "
            f"{sum(r.seconds for r in runs):.0f}; total {time.monotonic() - started:.0f}."
        ),
    ]
    validation_ratios = plateau_ratios(pooled, on_validation, best)
    if held is None:
        ratios = validation_ratios
    else:
        on_held_out = site_ratios(held.per_site, best)
        notes.insert(-1, held_out_note(held, on_held_out))
        ratios = plateau_ratios(held.pooled, on_held_out, best)
        ratios.update({f"val_{key}": value for key, value in validation_ratios.items()})
    ratios["max_round_drop"] = max(run.max_drop() for run in runs)
    report("quality", args.results, [*tables, rounds_table], ratios, notes, started)


def held_out_note(held: HeldOutScores, by_site: dict[str, dict[str, float]]) -> str:
    """What the held-out rows are, and the best arm's per-site ratios on them (`by_site`: site_ratios)."""
    listed = {kind: "; ".join(f"{n} {v:.3f}" for n, v in values.items()) for kind, values in by_site.items()}
    weights = ", ".join(f"{n} {w}" for n, w in held.cases.weights.items())
    return (
        f"Held-out rows: every model again on {held.cases.n_cases} held-out cases per site (cases after each site's"
        " own, drawn from its own profile: the same scanner, format and tumour distribution; no site trained or"
        " validated on them): centralized, each site's local-only model, and the global and personalized models"
        " each site kept after each run, each site's on its own held-out cases; pooled = the sites weighted by"
        f" their own cases ({weights}). Per site over local-only, personalized: {listed['personalized']};"
        f" global: {listed['global']}; centralized: {listed['centralized']}. The RATIO lines without a prefix are these held-out figures;"
        " `val_` lines are the same ratios on the sites' validation cases (the per-site columns of the first"
        " table)."
    )


def case_count(text: str) -> int:
    """A count of held-out cases per site: 0 or more."""
    count = int(text)
    if count < 0:
        raise argparse.ArgumentTypeError(f"{count}: give 0 (none) or more held-out cases per site")
    return count


def quality_options() -> argparse.ArgumentParser:
    """The bench's command line."""
    options = parser(__doc__, preset="bench", quick_preset="tiny", device=True)
    options.add_argument(
        "--model",
        default=None,
        choices=list(MODEL_PRESETS),
        help=f"model preset (default: with --plateau the app's `{MODEL_PRESET.default}`, the model a consortium"
        " would train; otherwise, and with --quick, tiny: the every-strategy screen's budget on 2 cores)",
    )
    options.add_argument(
        "--rounds", type=int, default=None, help="federated rounds (default 5; 2 with --quick)"
    )
    options.add_argument(
        "--local-epochs", type=int, default=None, help="epochs per round (default: the app's; 1 with --quick)"
    )
    options.add_argument("--learning-rate", type=float, default=None, help="default: the app's learning-rate")
    options.add_argument(
        "--patch-size",
        type=int,
        default=BENCH_PATCH_SIZE,
        help=f"training patch edge in voxels (default {BENCH_PATCH_SIZE}; 0: the model preset's)",
    )
    options.add_argument(
        "--spacing-mm",
        type=float,
        default=BENCH_SPACING_MM,
        help=f"isotropic voxel edge every arm resamples to, mm (default {BENCH_SPACING_MM:g}; the app's is {SPACING_MM.default:g})",
    )
    options.add_argument(
        "--seeds", type=int, default=1, help="seeds for centralized, local and the two best federated arms"
    )
    options.add_argument(
        "--plateau",
        action="store_true",
        help="the plateau budget: double centralized's epochs from rounds × local epochs until a doubling adds"
        f" < {PLATEAU_GAIN} pooled Dice, then run centralized, each site alone and --configs there, --seeds each",
    )
    options.add_argument(
        "--max-epochs",
        type=int,
        default=320,
        help="--plateau: the most epochs the search tries (default 320)",
    )
    options.add_argument(
        "--budget-epochs",
        type=int,
        default=None,
        help="--plateau: run the seeded arms at this budget (one of the search's epochs) when the plateau budget"
        " does not fit the machine; the search still runs to the plateau",
    )
    options.add_argument(
        "--data-seed",
        type=int,
        default=DATA_SEED,
        help="the synthetic federation's `oncofed synth --seed`: another draw of every site's cases, to check a"
        " finding on data it was not tuned on",
    )
    options.add_argument(
        "--configs",
        type=lambda text: [name.strip() for name in text.split(",")],
        default=list(PLATEAU_CONFIGS),
        help="--plateau: federated arms, comma-separated (default: " + ", ".join(PLATEAU_CONFIGS) + ")",
    )
    options.add_argument(
        "--test-cases",
        type=case_count,
        default=HELD_OUT_CASES,
        metavar="N",
        help="--plateau: measure every model again on N held-out cases per site, cases of the site's own profile"
        f" that no site trains or validates on (default {HELD_OUT_CASES}; 0: only the sites' validation cases)",
    )
    options.add_argument(
        "--personalize-epochs",
        type=int,
        choices=range(1, 11),
        metavar="1..10",
        default=PERSONALIZE_EPOCHS,
        help=f"epochs each site fine-tunes the global model for its personalized model (default {PERSONALIZE_EPOCHS})",
    )
    return options


def main() -> None:
    args = parse(quality_options())
    started = time.monotonic()
    device = torch_device(args.device)
    out = out_folder(args.out, "quality")
    logging.getLogger("flwr").setLevel(logging.WARNING)

    rounds = args.rounds or (2 if args.quick else 5)
    model = args.model or (MODEL_PRESET.default if args.plateau and not args.quick else "tiny")
    overrides: dict[str, object] = {
        "model_preset": model,
        "patch_size": args.patch_size or get_preset(model).patch_size,
        "num_server_rounds": rounds,
        # The simulated sites are the benchmark's own synthetic data: every arm trains on every training case and
        # validates on every validation case, so the disclosure thresholds are set to 1 (a deployed site's own
        # min-train-cases would make the small bench sites decline to train)
        "sim_min_report_cases": 1,
        "sim_min_train_cases": 1,
    }
    if args.local_epochs or args.quick:
        overrides["local_epochs"] = args.local_epochs or 1
    if args.learning_rate:
        overrides["learning_rate"] = args.learning_rate
    overrides["spacing_mm"] = args.spacing_mm
    config = run_config(**overrides)
    settings = SiteRunSettings.from_run_config(config)
    epochs = rounds * settings.local_epochs
    if device.type == "cuda":
        print(
            "note: federated arms run on whatever device the sites pick (cuda when torch sees one)",
            file=sys.stderr,
        )

    data, work = out / "data", out / "work"
    n_sites = default_sites(args.preset)
    write_federation(data, n_sites=n_sites, seed=args.data_seed, preset=args.preset)
    sites = load_sites(data, work, settings)
    if args.plateau:
        plateau_run(args, config, settings, sites, data, work, out, device, started)
        return
    names = [s.paths.name for s in sites]

    # Federated arms, seed 0: every configuration
    base_seed = settings.seed
    arms = federated_arms(args.quick, args.personalize_epochs)
    runs = {arm.name: run_arm(arm, config, data, work, out, base_seed) for arm in arms}
    n_configs = 2 * len(QUICK_STRATEGIES if args.quick else STRATEGIES)  # the strategies, ± local-norm
    configs = [runs[arm.name] for arm in arms[:n_configs]]
    ranked = sorted(configs, key=lambda r: r.final, reverse=True)
    best = ranked[0]

    # Centralized and local-only: every model on every site's validation cases
    clock = time.monotonic()
    models = {"centralized": centralized(sites, settings, epochs, device)}
    central_seconds = time.monotonic() - clock
    models[f"federated {best.arm.name} (global)"] = global_model(best, settings.model_preset)
    # (a local-norm arm's global model carries the initial norm layers: the sites' own are not at the coordinator)
    models.update(local_only_models(runs["fedavg"], work, sites, settings.model_preset))
    results = {name: evaluate(model, sites, settings, device) for name, model in models.items()}
    best_name = f"federated {best.arm.name} (global)"
    processed = f"{best_name} + post-processing (≥ {POSTPROCESS_MM3:g} mm³)"
    results[processed] = evaluate(models[best_name], sites, settings, device, POSTPROCESS_MM3)
    models[processed] = models[best_name]
    scores = {
        m: {s: aggregates(c, settings.seed) for s, c in by_site.items()} for m, by_site in results.items()
    }
    pooled = {
        m: aggregates([c for cases in by_site.values() for c in cases], settings.seed)
        for m, by_site in results.items()
    }

    # More seeds for centralized, local-only and the two best federated configurations (mean ± sd)
    repeats: dict[str, list[float]] = {
        "centralized": [pooled["centralized"][0]],
        f"federated {ranked[0].arm.name}": [ranked[0].final],
        f"federated {ranked[1].arm.name}": [ranked[1].final],
        "local-only (mean over sites)": [statistics.mean(runs["fedavg"].local.values())],
    }
    for seed in range(base_seed + 1, base_seed + args.seeds):
        seeded = SiteRunSettings.from_run_config({**config, "seed": seed})
        model = centralized(sites, seeded, epochs, device)
        repeats["centralized"].append(
            aggregates([c for cs in evaluate(model, sites, seeded, device).values() for c in cs], seed)[0]
        )
        for top in ranked[:2]:
            rerun = run_arm(top.arm, config, data, work, out, seed)
            repeats[f"federated {top.arm.name}"].append(rerun.final)
            if rerun.local:
                repeats["local-only (mean over sites)"].append(statistics.mean(rerun.local.values()))

    # Tables
    cross = markdown_table(
        ["mean Dice", *names, "pooled"],
        [[m, *(scores[m][s][0] for s in names), pooled[m][0]] for m in models],
    )
    hd95 = markdown_table(
        ["mean HD95 (mm) / false lesions", *names, "pooled"],
        [
            [m, *(f"{scores[m][s][1]:.3g} / {scores[m][s][2]}" for s in names), f"{pooled[m][1]:.3g}"]
            for m in models
        ],
    )
    all_rounds = sorted({r for run in runs.values() for r in run.pooled})
    federated = markdown_table(
        ["federated arm", *(f"r{r}" for r in all_rounds), *names, "max drop after r2", "MB/round", "ε", "s"],
        [
            [
                run.arm.name,
                *(run.pooled.get(r, float("nan")) for r in all_rounds),
                *(run.sites.get(s, float("nan")) for s in names),
                run.max_drop(),
                run.bytes_per_round / 1e6,
                "—" if run.epsilon is None else f"{run.epsilon:.3g}",
                f"{run.seconds:.0f}",
            ]
            for run in runs.values()
        ],
    )
    seeds_table = markdown_table(
        ["pooled mean Dice", f"seeds {base_seed}…{base_seed + args.seeds - 1}"],
        [[k, mean_sd(v)] for k, v in repeats.items()],
    )

    fedavg, local = runs["fedavg"], runs["fedavg"].local
    global_over_local = {s: ratio(best.sites[s], local[s]) for s in names}
    fed_over_local = {s: ratio(fedavg.personalized[s], local[s]) for s in names}
    per_site = markdown_table(
        [
            "site",
            "validation cases",
            "local-only",
            "fedavg global",
            f"{best.arm.name} global",
            "fedavg personalized",
            "personalized / local-only",
        ],
        [
            [
                s,
                fedavg.val_cases[s],
                local[s],
                fedavg.sites[s],
                best.sites[s],
                fedavg.personalized[s],
                fed_over_local[s],
            ]
            for s in names
        ],
    )
    dp_run = runs["fedavg DP"]
    notes = [
        model_note(settings),
        (
            "Pooled = every validation case of every site (a local-norm arm: each site's own norm layers on its own"
            f" cases); {sum(len(s.cases.val) for s in sites)} validation cases. Federated Dice per round from the runs'"
            " own validation (summary.json); the cross-site tables evaluate saved models on every site."
        ),
        f"Data: `oncofed synth --preset {args.preset} --sites {n_sites} --seed {args.data_seed}`; train/validation"
        " cases: "
        + ", ".join(f"{s.paths.name} {len(s.cases.train)}/{len(s.cases.val)}" for s in sites)
        + ".",
        (
            f"Budget: {epochs} epochs over every training case in every arm (federated: {rounds} rounds × "
            f"{settings.local_epochs} local epochs; local-only: the same per round inside the fedavg run); model "
            f"{settings.model_preset}, learning rate {settings.learning_rate}, batch {settings.batch_size}, patch "
            f"{settings.pipeline.patch_size}, {settings.pipeline.samples_per_case} patches per case per epoch, spacing "
            f"{settings.pipeline.spacing_mm} mm, centralized on {device}."
        ),
        f"Best federated configuration (last-round pooled Dice): {best.arm.name}; its global model per site over"
        " local-only: " + ", ".join(f"{s} {v:.3f}" for s, v in global_over_local.items()) + ".",
        (
            f"Per-site table: the fedavg run's last round, each site's own validation cases (its local-only baseline"
            f" and its personalized model, fine-tuned {args.personalize_epochs} epoch(s) from the global model on its"
            " own training cases, were validated on the same cases); a site's figure from 1 or 2 cases is one or"
            " two cases' Dice."
        ),
        (
            f"DP arm: noise multiplier {DP_NOISE}, clipping norm {DP_CLIP}, ε = {dp_run.epsilon:.3g} at δ = "
            f"{config['dp-delta']} after {rounds} rounds (Flower's RDP accountant)."
        ),
        (
            f"Post-processing row: the best federated global model again with predicted tumor components below "
            f"{POSTPROCESS_MM3:g} mm³ removed (a site's min-lesion-mm3; site_app.learning.postprocess): compare its HD95 and"
            " false lesions with the row above."
        ),
        f"Time (s): centralized {central_seconds:.0f}, federated arms "
        + ", ".join(f"{r.arm.name} {r.seconds:.0f}" for r in runs.values())
        + f"; total {time.monotonic() - started:.0f}.",
    ]
    ratios = {
        "fed_over_central": ratio(
            statistics.mean(repeats[f"federated {best.arm.name}"]), statistics.mean(repeats["centralized"])
        ),
        "fed_over_local_min": min(fed_over_local.values()),
        "global_over_local_min": min(global_over_local.values()),
        "rerun_dice_delta": abs(fedavg.final - runs["fedavg (rerun)"].final),
        "max_round_drop": fedavg.max_drop(),
        "max_round_drop_all_arms": max(r.max_drop() for r in configs),
        "fp16_bytes_over_fp32": runs["fedavg float16"].bytes_per_round / fedavg.bytes_per_round,
        "fp16_dice_delta": runs["fedavg float16"].final - fedavg.final,
        "dp_dice_delta": dp_run.final - fedavg.final,
    }
    report("quality", args.results, [federated, per_site, cross, hd95, seeds_table], ratios, notes, started)


if __name__ == "__main__":
    main()
