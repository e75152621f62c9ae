"""Federated variants: the base configuration with one or more run settings changed, same data, cases and seeds.

Runs the real ServerApp and ClientApps in this process (bench/in_process.py, as bench/quality.py does) once per
(configuration, seed): the base configuration and each `--variant NAME=KEY:VALUE[,KEY:VALUE…]`, for asking which
setting moves a federation's plateau without rerunning quality.py's centralized and local-only arms. With `--from`
an earlier bench/quality.py output folder, it reuses that folder's data, the sites' secrets, preprocessing cache
and inventory (so the same validation cases) and the run settings of its first federated run (so its federated
arm is the base); without it, it writes the preset's federation and uses the app's settings on quality.py's grid.
Headline figures: `<variant>_over_base` per variant and `best_variant_over_base` (last-round pooled Dice, means
over the seeds). `--quick`: the tiny preset, 2 rounds of 1 local epoch, one variant (a constant learning rate).
"""

import json
import logging
import re
import shutil
import statistics
import time
from pathlib import Path

from common import markdown_table, out_folder, parse, parser
from common import report as write_report
from quality import FederatedArm, FederatedResult, grid_config, model_note, run_arm

from data_prep.synth.federation import write_federation
from data_prep.synth.profiles import default_sites
from models.shared.run_config import SETTINGS_BY_KEY, RunConfigError
from site_app.settings.identity import site_folders
from site_app.settings.run_settings import SiteRunSettings

DATA_SEED = 0
SITE_STATE = ("secret", "cache", "inventory.json")
"""What a site's work folder keeps that fixes its validation cases (the secret) and saves preprocessing."""
PER_RUN = ("run-dir", "sim-data", "sim-work", "min-sites", "seed")
"""Settings of a reused run that belong to that run, not to its configuration."""
QUICK_VARIANTS = ("constant-lr=lr-schedule:constant",)


def parse_variant(text: str) -> FederatedArm:
    """NAME=KEY:VALUE[,KEY:VALUE…] → an arm; values are JSON (true, 0.5, "cosine") or else plain strings."""
    name, _, body = text.partition("=")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not body:
        raise SystemExit(
            f"error: --variant {text!r}: write NAME=KEY:VALUE[,KEY:VALUE], e.g. lr=learning-rate:0.001"
        )
    overrides: dict[str, object] = {}
    for pair in body.split(","):
        key, sep, value = pair.partition(":")
        if not sep:
            raise SystemExit(f"error: --variant {text!r}: {pair!r} is not KEY:VALUE")
        key = key.strip()
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value.strip()
        setting = SETTINGS_BY_KEY.get(key)
        if setting is None:  # an unknown key would be ignored by the app: the variant would be the base
            raise SystemExit(
                f"error: --variant {text!r}: {key!r} is not a run setting (pyproject.toml lists them)"
            )
        try:
            overrides[key] = setting.read({key: parsed})
        except RunConfigError as error:
            raise SystemExit(f"error: --variant {text!r}: {error}") from None
    return FederatedArm(name, overrides)


def reused_run(source: Path, out: Path) -> tuple[Path, Path, dict[str, object]]:
    """(data, work, settings) from an earlier quality.py output folder; its sites' state copied into `out`."""
    configs = sorted((source / "runs").glob("*/config.json"))
    if not (source / "data").is_dir() or not configs:
        raise SystemExit(
            f"error: --from {source}: not a bench/quality.py output folder (no data/ or runs/*/config.json)"
        )
    work = out / "work"
    for site in (source / "work").iterdir():
        for part in SITE_STATE:
            found, copy = site / part, work / site.name / part
            if found.is_dir():
                shutil.copytree(found, copy, dirs_exist_ok=True)
            elif found.is_file():
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(found, copy)
    settings = json.loads(configs[0].read_text())["run_config"]
    return source / "data", work, {k: v for k, v in settings.items() if k not in PER_RUN}


def main() -> None:
    options = parser(__doc__, preset="consortium", quick_preset="tiny")
    options.add_argument(
        "--from", dest="source", type=Path, default=None, help="a bench/quality.py --out folder"
    )
    options.add_argument(
        "--variant",
        action="append",
        default=None,
        help="NAME=KEY:VALUE[,KEY:VALUE…] run settings over the base (repeatable)",
    )
    options.add_argument("--seeds", type=int, default=1, help="seeds 0…N−1 for every configuration")
    options.add_argument(
        "--rounds", type=int, default=None, help="without --from: rounds (default 20; 2 --quick)"
    )
    args = parse(options)
    started = time.monotonic()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    out = out_folder(args.out, "fed_variants")
    variants = [parse_variant(v) for v in (args.variant or (QUICK_VARIANTS if args.quick else ()))]
    if not variants:
        raise SystemExit(
            "error: no --variant given: name at least one, e.g. --variant lr=learning-rate:0.001"
        )
    if args.source is not None:
        data, work, config = reused_run(args.source.resolve(), out)
        origin = f"data, site secrets and the first federated run's settings of {args.source}"
    else:
        data, work = out / "data", out / "work"
        write_federation(data, n_sites=default_sites(args.preset), seed=DATA_SEED, preset=args.preset)
        rounds = args.rounds or (2 if args.quick else 20)
        config = grid_config(rounds, args.quick)
        origin = f"`oncofed synth --preset {args.preset} --seed {DATA_SEED}`, the app's settings"
    n_sites = len(site_folders(data))
    base = FederatedArm("base", {})
    seeds = range(args.seeds)
    runs: dict[str, list[FederatedResult]] = {
        arm.name: [run_arm(arm, config, data, work, out, seed) for seed in seeds] for arm in [base, *variants]
    }
    means = {name: statistics.fmean(run.final for run in found) for name, found in runs.items()}
    table = markdown_table(
        [
            "configuration",
            "settings",
            *(f"seed {s}" for s in seeds),
            "mean",
            "best round (mean)",
            "max drop after r2 (worst seed)",
            "s",
        ],
        [
            [
                name,
                ", ".join(f"{k}={v}" for k, v in found[0].arm.overrides.items()) or "—",
                *(run.final for run in found),
                means[name],
                statistics.fmean(max(run.pooled.values()) for run in found),
                max(run.max_drop() for run in found),
                f"{sum(run.seconds for run in found):.0f}",
            ]
            for name, found in runs.items()
        ],
    )
    ratios = {
        f"{re.sub(r'[^A-Za-z0-9]', '_', arm.name)}_over_base": means[arm.name] / means["base"]
        for arm in variants
    }
    ratios["best_variant_over_base"] = max(ratios.values())
    notes = [
        model_note(SiteRunSettings.from_run_config(config)),
        (
            f"Base: {origin}; {n_sites} sites, {config['num-server-rounds']} rounds × {config['local-epochs']}"
            f" local epochs, strategy {config['strategy']}, local-norm {config['local-norm']}; seeds"
            f" 0…{args.seeds - 1}."
        ),
        "Pooled Dice: case-weighted mean Dice over every site's validation cases after the last round (summary.json).",
    ]
    write_report("fed_variants", args.results, [table], ratios, notes, started)


if __name__ == "__main__":
    main()
