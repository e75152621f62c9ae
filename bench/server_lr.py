"""Server learning rate: FedAdam and FedYogi at each server learning rate η of a grid, against FedAvg.

FedAdam and FedYogi (Reddi et al., "Adaptive Federated Optimization", ICLR 2021) move the global model by an
Adam/Yogi step on the mean update; their η (`server-lr`) sets how far each coordinate moves per round and is the
setting their paper searches first (η over 10^-3 … 1 with τ fixed). This bench runs the real ServerApp and
ClientApps in this process (bench/in_process.py, as bench/quality.py does) on one synthetic federation, once per
(strategy, η) and once with FedAvg, all from the same initial model and seed, and reports each run's pooled Dice per
round. Headline figures: `fedadam_best_over_fedavg` and `fedyogi_best_over_fedavg` (last-round pooled Dice of the
best η over FedAvg's), `fedadam_default_over_best` and `fedyogi_default_over_best` (the app's default `server-lr`
against the best η of the grid: 1.0 when the default is the best). `--quick`: the tiny preset, 2 rounds, 2 η.
"""

import logging
import time

from common import markdown_table, out_folder, parse, parser
from common import report as write_report
from quality import BENCH_SPACING_MM, FederatedArm, FederatedResult, grid_config, run_arm

from data_prep.synth.federation import write_federation
from data_prep.synth.profiles import default_sites
from models.shared.run_config import SERVER_LR

DATA_SEED = 0
RUN_SEED = 0
ADAPTIVE = ("fedadam", "fedyogi")
GRID = (0.001, 0.003, 0.01, 0.03, 0.1)
"""η searched: half-decades around the app's default (0.03), the range where Reddi et al. found the best η."""
QUICK_GRID = (SERVER_LR.default, 10 * SERVER_LR.default)
"""--quick: the app's default η (so that `*_default_over_best` is measured) and ten times it."""


def arms(grid: tuple[float, ...]) -> list[FederatedArm]:
    """FedAvg once, then each adaptive strategy at each η of `grid`."""
    found = [FederatedArm("fedavg", {"strategy": "fedavg"})]
    for strategy in ADAPTIVE:
        found += [
            FederatedArm(f"{strategy} η={eta:g}", {"strategy": strategy, "server-lr": eta}) for eta in grid
        ]
    return found


def best_eta(runs: dict[str, FederatedResult], strategy: str) -> FederatedResult:
    """The strategy's run with the highest last-round pooled Dice (the smaller η on a tie)."""
    candidates = [run for run in runs.values() if run.arm.overrides["strategy"] == strategy]
    return max(candidates, key=lambda run: (run.final, -float(run.arm.overrides["server-lr"])))


def main() -> None:
    options = parser(__doc__, preset="demo", quick_preset="tiny")
    options.add_argument(
        "--rounds", type=int, default=None, help="federated rounds (default 5; 2 with --quick)"
    )
    options.add_argument("--model", default="tiny", help="model preset (default tiny)")
    args = parse(options)
    started = time.monotonic()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    out = out_folder(args.out, "server_lr")
    rounds = args.rounds or (2 if args.quick else 5)
    grid = QUICK_GRID if args.quick else GRID
    config = grid_config(rounds, args.quick, model_preset=args.model)
    data, work = out / "data", out / "work"
    n_sites = default_sites(args.preset)
    write_federation(data, n_sites=n_sites, seed=DATA_SEED, preset=args.preset)
    runs = {arm.name: run_arm(arm, config, data, work, out, RUN_SEED) for arm in arms(grid)}

    all_rounds = sorted({r for run in runs.values() for r in run.pooled})
    table = markdown_table(
        ["strategy", "server-lr η", *(f"r{r}" for r in all_rounds), "max drop after r2", "s"],
        [
            [
                run.arm.overrides["strategy"],
                run.arm.overrides.get("server-lr", "—"),
                *(run.pooled.get(r, float("nan")) for r in all_rounds),
                run.max_drop(),
                f"{run.seconds:.0f}",
            ]
            for run in runs.values()
        ],
    )
    fedavg = runs["fedavg"]
    ratios: dict[str, float] = {}
    notes = [
        (
            f"Data: `oncofed synth --preset {args.preset} --sites {n_sites} --seed {DATA_SEED}`; model {args.model}, "
            f"{rounds} rounds × {config['local-epochs']} local epochs, spacing {BENCH_SPACING_MM:g} mm, run seed "
            f"{RUN_SEED}; every other setting the app's (τ {config['tau']}, β1 {config['beta1']}, β2 {config['beta2']})."
        ),
        "Pooled Dice: case-weighted mean Dice over every site's validation cases, from each run's summary.json.",
    ]
    for strategy in ADAPTIVE:
        best = best_eta(runs, strategy)
        default = runs.get(f"{strategy} η={SERVER_LR.default:g}")
        ratios[f"{strategy}_best_over_fedavg"] = best.final / fedavg.final if fedavg.final else float("nan")
        if default is not None:
            ratios[f"{strategy}_default_over_best"] = (
                default.final / best.final if best.final else float("nan")
            )
        notes.append(
            f"{strategy}: best η {best.arm.overrides['server-lr']:g} (last-round pooled Dice {best.final:.3f}; "
            f"FedAvg {fedavg.final:.3f}; the app's default η {SERVER_LR.default:g}: "
            f"{'not in this grid' if default is None else f'{default.final:.3f}'})."
        )
    write_report("server_lr", args.results, [table], ratios, notes, started)


if __name__ == "__main__":
    main()
