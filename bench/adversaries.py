"""One malicious site of four: how far the honest sites' pooled Dice falls with the app's defaults and unprotected.

A 4-site synthetic federation trained in this process (bench/in_process.py, the real ServerApp and ClientApps);
the last site is the attacker (bench/poisoning_member.py): it describes itself with 10^6 usable cases, claims
them in every train reply and sends its honest update ×100 (scaled), ×−100 (sign-flipped), or what it trained on
its cases with the labels permuted (swapped-labels). Each attack runs with the app's defaults and on the
unprotected path (fedavg, `max-site-weight` 1, `update-norm-bound` 0, `update-norm-median-factor` 0, `update-min-cosine` −1), each against the same run without the
attacker; the measure is the pooled mean Dice over the three honest sites' validation cases in the last round.
The training recipe (the tiny UNet, 5 rounds at 0.01 with the cosine schedule, a 3 mm grid) is the flags'.

RATIO poisoned_dice_drop: the largest over the attacks of clean − attacked pooled Dice, app defaults (≤ 0.03).
RATIO unprotected_poisoned_dice_drop: the smallest over the attacks of the same drop, unprotected (control, ≥ 0.3).
RATIO robust_over_fedavg_clean: pooled Dice of the app's defaults over plain FedAvg (unprotected), no attacker.
Per attack: RATIO <attack>_poisoned_dice_drop and <attack>_unprotected_poisoned_dice_drop.
"""

import json
import logging
import time

from common import markdown_table, out_folder, parse, parser, report, run_config
from poisoning_member import (
    ATTACKS,
    CLAIMED,
    N_SITES,
    honest_pooled_dice,
    largest_norm_sites,
    norms,
    report_outlier,
    run,
    write_data,
)

from models.shared.run_config import LR_SCHEDULES

UNPROTECTED = {
    "strategy": "fedavg",
    "max_site_weight": 1.0,
    "update_norm_bound": 0.0,
    "update_norm_median_factor": 0.0,
    "update_norm_drop_factor": 0.0,
    "update_min_cosine": -1.0,
}
"""Plain FedAvg with the bounds off: each setting's value that switches it off."""


def setting_value(text: str) -> object:
    """A --defaults value as the run config holds it: a number or true/false when it reads as one, else text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    options = parser(__doc__, preset="demo", quick_preset="tiny")
    options.add_argument("--model", default="tiny", help="model preset (default tiny)")
    options.add_argument(
        "--rounds", type=int, default=None, help="federated rounds (default 5; 2 with --quick)"
    )
    options.add_argument("--local-epochs", type=int, default=None, help="sites' local epochs (default app's)")
    options.add_argument(
        "--learning-rate", type=float, default=0.01, help="sites' learning rate (default 0.01)"
    )
    options.add_argument(
        "--lr-schedule",
        default="cosine",
        choices=LR_SCHEDULES,
        help="the sites' learning rate over the rounds (default cosine: at 0.01 a 5-round run settles in its last"
        " rounds; the app's default, constant, is for its longer runs at a lower rate)",
    )
    options.add_argument(
        "--spacing-mm", type=float, default=3.0, help="the grid sites resample to (default 3 mm)"
    )
    options.add_argument("--patch-size", type=int, default=24, help="training patch edge (default 24)")
    options.add_argument(
        "--attacks", default=",".join(ATTACKS), help=f"comma-separated, of {', '.join(ATTACKS)}"
    )
    options.add_argument(
        "--defaults",
        default="",
        help="run settings of the protected arms on top of the app's defaults, k=v,… (e.g. strategy=fedmedian)",
    )
    args = parse(options)
    started = time.monotonic()
    out = out_folder(args.out, "adversaries")
    logging.getLogger("flwr").setLevel(logging.WARNING)
    rounds = args.rounds or (2 if args.quick else 5)
    chosen = {
        "local_epochs": args.local_epochs or (1 if args.quick else None),
        "learning_rate": args.learning_rate,
        "lr_schedule": args.lr_schedule,
        "spacing_mm": args.spacing_mm,
        "patch_size": args.patch_size,
    }
    base = {
        "model_preset": args.model,
        "num_server_rounds": rounds,
        "sim_min_report_cases": 1,
        "sim_min_train_cases": 1,
        "tracking_uri": "none",
        **{key: value for key, value in chosen.items() if value is not None},
    }
    protected = {
        key: setting_value(value) for key, value in (i.split("=", 1) for i in args.defaults.split(",") if i)
    }
    attacks = [a for a in args.attacks.split(",") if a]
    arms = {"defaults": protected, "unprotected": UNPROTECTED}
    data = write_data(out / "data", args.preset)
    work = out / "work"
    attacker = max(p.name for p in data.iterdir() if p.is_dir())
    rows, dice = [], {}
    for arm, overrides in arms.items():
        for attack in [None, *attacks]:
            clock = time.monotonic()
            name = f"{attack or 'clean'}-{arm}"
            run_dir = run(data, work, out / "runs" / name, run_config(**base, **overrides), attack)
            dice[attack, arm] = honest_pooled_dice(run_dir, attacker)
            site_norms = norms(run_dir)
            rows.append(
                [
                    attack or "none",
                    arm,
                    f"{dice[attack, arm]:.3f}",
                    f"{dice[None, arm] - dice[attack, arm]:.3f}" if attack else "—",
                    " ".join(largest_norm_sites(run_dir)),
                    str(report_outlier(run_dir)),
                    f"{max(site_norms.get(attacker, [0.0])):.3g}",
                    f"{max((max(v) for s, v in site_norms.items() if s != attacker), default=0.0):.3g}",
                    f"{time.monotonic() - clock:.0f}",
                ]
            )
    ratios = {}
    for attack in attacks:
        ratios[f"{attack.replace('-', '_')}_poisoned_dice_drop"] = (
            dice[None, "defaults"] - dice[attack, "defaults"]
        )
        ratios[f"{attack.replace('-', '_')}_unprotected_poisoned_dice_drop"] = (
            dice[None, "unprotected"] - dice[attack, "unprotected"]
        )
    ratios = {
        "poisoned_dice_drop": max(v for k, v in ratios.items() if "unprotected" not in k),
        "unprotected_poisoned_dice_drop": min(v for k, v in ratios.items() if "unprotected" in k),
        "robust_over_fedavg_clean": dice[None, "defaults"] / dice[None, "unprotected"]
        if dice[None, "unprotected"]
        else float(dice[None, "defaults"] == 0),
        **ratios,
    }
    table = markdown_table(
        [
            "attack",
            "settings",
            "honest pooled Dice",
            "drop",
            "largest update norm (per round)",
            "report names",
            "attacker's largest norm",
            "honest largest norm",
            "s",
        ],
        rows,
    )
    setup = (
        f"data: `oncofed synth --preset {args.preset} --sites {N_SITES} --seed 0`; the attacker is {attacker},"
        f" which claims {CLAIMED:g} cases; model {args.model}, {rounds} rounds, run settings {base};"
        f" defaults: the app's{' with ' + args.defaults if args.defaults else ''}; unprotected: {UNPROTECTED}."
    )
    measure = (
        "Pooled Dice: case-weighted mean Dice over the honest sites' validation cases, last round"
        " (robust_over_fedavg_clean too). Norms: L2 distance of each update from the global model it was sent."
    )
    notes = [setup, measure]
    report("adversaries", args.results, [table], ratios, notes, started)


if __name__ == "__main__":
    main()
