"""Secure aggregation's cost: a round's wall time with `secure-aggregation = true` over the same round in plaintext.

Three simulated sites (`oncofed synth --preset tiny --sites 3`), the tiny model, 2 rounds, in Flower's Simulation
Engine through our launcher (deploy.simulation.launch); plaintext and secure runs alternate (plain, secure, plain,
secure; --quick: one of each), on the same data with the same seed, so that load drift on a shared machine hits
both alike. Each training round's wall time is read from the ServerApp's streamed log (common.RoundClock: train,
aggregation and validation of the round). Both runs keep the app's defaults (max-site-weight 0.5,
update-norm-bound 10); every site trains and reports however few cases it has.

RATIO secagg_round_over_plain: median secure round / median plaintext round (target ≤ 1.3).
"""

import dataclasses
import statistics
import time
from pathlib import Path

from common import RoundClock, markdown_table, out_folder, parse, parser, report

from data_prep.synth.federation import write_federation
from deploy.processes import stop_on_signals
from deploy.simulation.launch import failure_context, run_simulation
from deploy.simulation.plan import plan_simulation

N_SITES = 3
ROUNDS = 2
DATA_SEED = 0


def timed_run(data: Path, run_dir: Path, secure: bool) -> dict[int, float]:
    """Round → wall seconds of one 2-round run, secure or not."""
    plan = plan_simulation(data, run_dir, ROUNDS, "tiny", seed=0)
    config = {
        **plan.run_config,
        "local-epochs": 1,
        "sim-min-report-cases": 1,
        "sim-min-train-cases": 1,
        "tracking-uri": "none",
        "secure-aggregation": secure,
    }
    clock = RoundClock()
    code = run_simulation(dataclasses.replace(plan, run_config=config), clock.on_line)
    if code != 0:
        raise RuntimeError(f"simulation failed (exit {code}):\n{failure_context(run_dir)}")
    return clock.durations()


def main() -> None:
    args = parse(parser(__doc__, preset="tiny"))
    started = time.monotonic()
    out = out_folder(args.out, "secagg")
    data = out / "data"
    write_federation(data, n_sites=N_SITES, seed=DATA_SEED, preset=args.preset)
    pairs = 1 if args.quick else 2
    rounds: dict[str, list[float]] = {"plain": [], "secure": []}
    rows = []
    with stop_on_signals("the benchmark and every Flower process it started"):
        for pair in range(pairs):
            for mode in rounds:
                walls = timed_run(data, out / f"{mode}-{pair}", secure=mode == "secure")
                rounds[mode] += walls.values()
                rows += [[mode, pair, rnd, wall] for rnd, wall in walls.items()]
    median = {mode: statistics.median(walls) for mode, walls in rounds.items()}
    table = markdown_table(["run", "pair", "round", "wall s"], rows)
    summary = markdown_table(
        ["mode", "median round s", "rounds"], [[m, median[m], len(w)] for m, w in rounds.items()]
    )
    notes = [
        (
            f"Data: `oncofed synth --preset {args.preset} --sites {N_SITES} --seed {DATA_SEED}`; model tiny,"
            f" {ROUNDS} rounds per run, 1 local epoch, {pairs} plain/secure pair(s), Simulation Engine, CPU."
        )
    ]
    report(
        "secagg",
        args.results,
        [summary, table],
        {"secagg_round_over_plain": median["secure"] / median["plain"]},
        notes,
        started,
    )


if __name__ == "__main__":
    main()
