"""Stability: the pooled Dice of every round of a simulated federation, run twice with one seed.

Writes the synthetic federation (`oncofed synth --preset <preset> --seed 0`, default anatomy: the MNI152 brain,
3 sites of 10 cases), then runs `oncofed simulate --rounds 8 --preset small --seed 0` on it twice, one after
the other (two Ray clusters side by side thrash on 2 cores), into two run folders (deploy.simulation: our
SuperLink on a free port, every process stopped at the end), and reads each run's metrics.jsonl: per round the
pooled mean Dice (case-weighted over the sites' validation cases), per site the Dice of each region and the
validation cases with an empty prediction. Headline figures: `anatomy_pooled_dice` (the final
round's pooled Dice, first run; target ≥ 0.70), `max_round_drop` (the largest fall of pooled Dice between
consecutive rounds after round 2; target ≤ 0.05), `empty_site_rounds` (rounds after round 2 in which some site
predicted nothing at every validation case; target 0) and `rerun_dice_delta` (largest difference of any site's
Dice in any round between the two runs; target ≤ 0.005). `--run-config`: run settings other than the app's for both
runs (the entry names them). `--quick`: the tiny preset, 2 rounds, the tiny model.
"""

import json
import time
from collections import defaultdict
from pathlib import Path

from common import markdown_table, out_folder, parse, parser, report

from data_prep.synth.federation import write_federation
from data_prep.synth.profiles import DEFAULT_SITES
from deploy.processes import stop_on_signals
from deploy.simulation.launch import failure_context, run_simulation
from deploy.simulation.plan import plan_simulation
from models.shared.labels import REGIONS

DATA_SEED = 0
RUN_SEED = 0
FIRST_COUNTED_DROP = 2
"""Drops are counted between rounds r-1 and r for r > this: rounds 0–2 are the start, where a model may still
swing while it finds the tumour."""


def simulate(data: Path, run_dir: Path, rounds: int, model: str, overrides: str = "") -> None:
    plan = plan_simulation(data, run_dir, rounds, model, seed=RUN_SEED, overrides=overrides)
    code = run_simulation(plan, lambda line: print(line, flush=True) if "ROUND" in line else None)
    if code != 0:
        raise SystemExit(f"error: the simulation failed (exit {code}):\n{failure_context(run_dir)}")


def per_round(run_dir: Path) -> dict[int, dict[str, dict[str, float]]]:
    """round → site → that site's released validation metrics (sites that reported numbers only)."""
    rounds: dict[int, dict[str, dict[str, float]]] = defaultdict(dict)
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        metrics = record.get("metrics") or {}
        if "dice-mean" in metrics:
            rounds[int(record["round"])][record["site"]] = metrics
    return dict(sorted(rounds.items()))


def pooled(sites: dict[str, dict[str, float]]) -> float:
    """Case-weighted mean Dice over the sites (report.json's pooled mean)."""
    cases = sum(m["n-cases"] for m in sites.values())
    return sum(m["dice-mean"] * m["n-cases"] for m in sites.values()) / cases


def all_empty_sites(sites: dict[str, dict[str, float]]) -> list[str]:
    """Sites whose prediction was empty at every validation case, for the whole tumour."""
    return sorted(s for s, m in sites.items() if m.get("empty-pred-wt", 0) >= m["n-cases"])


def main() -> None:
    options = parser(__doc__, preset="anatomy", quick_preset="tiny")
    options.add_argument("--rounds", type=int, default=None, help="rounds (default 8; 2 with --quick)")
    options.add_argument("--model", default=None, help="model preset (default small; tiny with --quick)")
    options.add_argument(
        "--run-config",
        default="",
        help="more run settings for both runs, as `oncofed simulate --run-config` takes them"
        """ (e.g. 'lr-schedule="constant" local-norm=false'; default: the app's)""",
    )
    args = parse(options)
    rounds = args.rounds or (2 if args.quick else 8)
    model = args.model or ("tiny" if args.quick else "small")
    out = out_folder(args.out, "stability")
    started = time.monotonic()
    data = out / "data"
    if not data.exists():
        write_federation(data, n_sites=DEFAULT_SITES[args.preset], seed=DATA_SEED, preset=args.preset)
    runs = [out / "run-1", out / "run-2"]
    with stop_on_signals("the benchmark"):
        # in this thread, one after the other, so Ctrl-C unwinds the running federation's processes
        for run_dir in runs:
            try:
                simulate(data, run_dir, rounds, model, args.run_config)
            except ValueError as error:  # a run setting the app does not take, or a run folder already used
                raise SystemExit(f"error: {error}") from None
    curves = [per_round(run_dir) for run_dir in runs]

    first = curves[0]
    rows = []
    for rnd, sites in first.items():
        rows.append(
            [
                rnd,
                pooled(sites),
                pooled(curves[1][rnd]) if rnd in curves[1] else "missing",
                *(
                    " ".join(
                        f"{region} {sites[s].get(f'dice-{region}-mean', float('nan')):.2f}"
                        for region in REGIONS
                    )
                    + f"; empty {sites[s].get('empty-pred-wt', 0)}/{sites[s]['n-cases']}"
                    for s in sorted(sites)
                ),
            ]
        )
    site_names = sorted(next(iter(first.values())))
    table = markdown_table(
        ["round", "pooled Dice (run 1)", "pooled Dice (run 2)", *(f"{s} (run 1)" for s in site_names)], rows
    )
    pooled_curve = {rnd: pooled(sites) for rnd, sites in first.items()}
    drops = [
        pooled_curve[rnd - 1] - pooled_curve[rnd]
        for rnd in pooled_curve
        if rnd > FIRST_COUNTED_DROP and rnd - 1 in pooled_curve
    ]
    empty = [rnd for rnd, sites in first.items() if rnd > FIRST_COUNTED_DROP and all_empty_sites(sites)]
    rerun = max(
        abs(m["dice-mean"] - curves[1].get(rnd, {}).get(site, {}).get("dice-mean", float("inf")))
        for rnd, sites in first.items()
        for site, m in sites.items()
    )
    last = max(pooled_curve)
    report(
        "stability",
        args.results,
        [table],
        {
            f"{args.preset}_pooled_dice": pooled_curve[last],
            "max_round_drop": max(drops, default=0.0),
            "empty_site_rounds": float(len(empty)),
            "rerun_dice_delta": rerun,
        },
        [
            (
                f"Data: `oncofed synth --preset {args.preset} --seed {DATA_SEED}`; each run: `oncofed simulate "
                f"--rounds {rounds} --preset {model} --seed {RUN_SEED}"
                + (
                    f" --run-config '{args.run_config}'`"
                    if args.run_config
                    else "` (the app's default settings)"
                )
                + f", into {runs[0].name} and {runs[1].name}."
            ),
            (
                "Pooled Dice = case-weighted mean over the sites of each site's mean Dice over regions "
                f"({', '.join(REGIONS)}) and validation cases; drops counted after round {FIRST_COUNTED_DROP}."
            ),
            (
                f"Rounds after round {FIRST_COUNTED_DROP} with a site predicting nothing at every validation "
                f"case: {', '.join(map(str, empty)) or 'none'}."
            ),
        ],
        started,
    )


if __name__ == "__main__":
    main()
