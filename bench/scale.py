"""Scale: many simulated sites with the tiny model; wall time and peak memory against a 4-site run.

Both federations run in Flower's Simulation Engine through deploy.simulation.launch (our own SuperLink on a free port, our
own FLWR_HOME, every process stopped at the end). Site folders past the synthetic generator's 26 (hospital-a …
hospital-z) come from a second federation written with the next seed and are renamed hospital-a2, hospital-b2, ….
Memory is the peak proportional set size of every process the run started (SuperLink, Ray, ClientApps).
"""

import os
import tempfile
import time
from pathlib import Path

from common import RoundClock, RunMemory, markdown_table, out_folder, parse, parser, report

from data_prep.synth.federation import write_federation
from data_prep.synth.profiles import MAX_SITES
from deploy.processes import stop_on_signals
from deploy.simulation.launch import failure_context, run_simulation
from deploy.simulation.plan import plan_simulation

DATA_SEED = 0
BASELINE_SITES = 4
MODEL = "tiny"


def write_sites(out: Path, n_sites: int, preset: str) -> Path:
    """A federation of n_sites site folders under out."""
    write_federation(out, n_sites=min(n_sites, MAX_SITES), seed=DATA_SEED, preset=preset)
    if n_sites > MAX_SITES:
        with tempfile.TemporaryDirectory(dir=out.parent) as extra:
            for folder in write_federation(
                Path(extra), n_sites=n_sites - MAX_SITES, seed=DATA_SEED + 1, preset=preset
            ):
                os.replace(folder, out / f"{folder.name}2")
    return out


def simulate(data: Path, run_dir: Path, rounds: int) -> dict[str, float]:
    """Wall time, mean round time and memory peaks of one simulated run."""
    plan = plan_simulation(data, run_dir, rounds, MODEL, seed=0)
    clock = RoundClock()
    started = time.monotonic()
    with RunMemory(run_dir) as memory:
        code = run_simulation(plan, clock.on_line)
    wall = time.monotonic() - started
    if code != 0:
        raise RuntimeError(
            f"simulation of {plan.n_sites} sites failed (exit {code}):\n{failure_context(run_dir)}"
        )
    rounds_s = clock.durations()
    return {
        "sites": plan.n_sites,
        "wall": wall,
        "round": sum(rounds_s.values()) / len(rounds_s),
        "peak": memory.peak_total / 2**30,
        "largest": memory.peak_process / 2**30,
        "processes": memory.peak_processes,
    }


def main() -> None:
    options = parser(__doc__, preset="tiny")
    options.add_argument(
        "--sites", type=int, default=None, help="sites of the large run (default 32; 8 quick)"
    )
    options.add_argument("--rounds", type=int, default=None, help="rounds (default 2; 1 with --quick)")
    args = parse(options)
    started = time.monotonic()
    out = out_folder(args.out, "scale")
    n_sites = args.sites or (8 if args.quick else 32)
    rounds = args.rounds or (1 if args.quick else 2)

    with stop_on_signals("the benchmark and every Flower process it started"):
        baseline = simulate(
            write_sites(out / f"data-{BASELINE_SITES}", BASELINE_SITES, args.preset),
            out / f"run-{BASELINE_SITES}",
            rounds,
        )
        large = simulate(
            write_sites(out / f"data-{n_sites}", n_sites, args.preset), out / f"run-{n_sites}", rounds
        )

    rows = [
        [
            r["sites"],
            r["wall"],
            r["wall"] / r["sites"],
            r["round"],
            r["round"] / r["sites"],
            r["peak"],
            r["largest"],
            r["processes"],
        ]
        for r in (baseline, large)
    ]
    table = markdown_table(
        [
            "sites",
            "wall s",
            "wall s/site",
            "round s",
            "round s/site",
            "peak memory GiB",
            "largest process GiB",
            "processes",
        ],
        rows,
    )
    notes = [
        (
            f"Data: `oncofed synth --preset {args.preset} --seed {DATA_SEED}` (sites past {MAX_SITES}: seed "
            f"{DATA_SEED + 1}); model {MODEL}, {rounds} round(s) after the round-0 evaluation; the app's other settings."
        ),
        (
            "Wall = the whole `oncofed simulate` path (SuperLink start, Ray start, round 0, rounds, shutdown); round = mean"
            " of the rounds' wall times from the ServerApp log."
        ),
    ]
    ratios = {
        "scale_round_per_site_over_baseline": (large["round"] / large["sites"])
        / (baseline["round"] / baseline["sites"]),
        "scale_wall_per_site_over_baseline": (large["wall"] / large["sites"])
        / (baseline["wall"] / baseline["sites"]),
        "scale_memory_over_baseline": large["peak"] / baseline["peak"],
    }
    report("scale", args.results, [table], ratios, notes, started)


if __name__ == "__main__":
    main()
