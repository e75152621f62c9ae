"""One malicious site of four: how far the pooled Dice falls with the app's defaults and with the bounds off.

A 4-site synthetic federation trained in this process (bench/in_process.py, the real ServerApp and ClientApps).
hospital-d is malicious: its messages pass through a grid that rewrites them (MaliciousGrid) so that it describes
itself with 10^6 usable cases, claims them in every train reply and sends its honest update ×100. Runs: the
federation without attacker changes (clean, app defaults), the attack with the defaults (`max-site-weight`,
`update-norm-bound`), the attack on the unprotected path (fedavg, share cap and bound off), and fedmedian clean.

RATIO poisoned_dice_drop: clean pooled Dice − attacked with the defaults (the claim: under 0.03).
RATIO unprotected_poisoned_dice_drop: clean pooled Dice − attacked unprotected (the control: above 0.3).
RATIO robust_over_fedavg_clean: fedmedian's clean pooled Dice over fedavg's (the price of the robust strategy).
"""

import json
import logging
import time
from pathlib import Path

import numpy as np
from common import markdown_table, out_folder, parse, parser, report, run_config
from flwr.app import Array, ArrayRecord, Message
from in_process import InProcessGrid, run_federation

from data_prep.synth.federation import write_federation
from models.shared.wire import NUM_EXAMPLES, Overview, Record
from models.transport import decode

N_SITES = 4
ATTACKER_NODE = 101 + N_SITES - 1
"""The last simulated site's node (bench/in_process.py numbers partitions from 101)."""
SCALE = 100.0
CLAIMED = 10**6


class MaliciousGrid(InProcessGrid):
    """Carries every message as InProcessGrid does; the attacker's describe and train replies are rewritten."""

    def _deliver(self, message: Message) -> Message:
        reply = super()._deliver(message)
        if message.metadata.dst_node_id != ATTACKER_NODE or reply.has_error():
            return reply
        content = reply.content
        if Record.OVERVIEW in content.metric_records:
            content[Record.OVERVIEW][Overview.N_CASES_USABLE] = CLAIMED
        if Record.ARRAYS in content.array_records and Record.ARRAYS in message.content.array_records:
            sent, trained = decode(message.content[Record.ARRAYS]), decode(content[Record.ARRAYS])
            content[Record.ARRAYS] = ArrayRecord(
                {
                    name: Array(sent[name].numpy() + SCALE * (array.numpy() - sent[name].numpy()))
                    if np.dtype(array.dtype).kind == "f"
                    else array
                    for name, array in trained.items()
                }
            )
            content[Record.METRICS][NUM_EXAMPLES] = CLAIMED
        return reply


def pooled_dice(run_dir: Path) -> float:
    """The pooled mean Dice of the run's last round."""
    summary = json.loads((run_dir / "summary.json").read_text())
    last = max(summary["weighted_mean"], key=int)
    return float(summary["weighted_mean"][last]["dice-mean"])


def largest_norm_site(run_dir: Path) -> str:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    sent = [r for r in records if isinstance(r.get("update-norm"), int | float)]
    return max(sent, key=lambda r: r["update-norm"])["site"] if sent else ""


def main() -> None:
    options = parser(__doc__, preset="tiny", quick_preset="tiny")
    options.add_argument("--model", default="tiny", help="model preset (default tiny)")
    options.add_argument(
        "--rounds", type=int, default=None, help="federated rounds (default 4; 2 with --quick)"
    )
    options.add_argument(
        "--learning-rate", type=float, default=None, help="sites' learning rate (default app's)"
    )
    args = parse(options)
    started = time.monotonic()
    out = out_folder(args.out, "adversaries")
    logging.getLogger("flwr").setLevel(logging.WARNING)
    rounds = args.rounds or (2 if args.quick else 4)
    base = {
        "model_preset": args.model,
        "num_server_rounds": rounds,
        "sim_min_report_cases": 1,
        "sim_min_train_cases": 1,
        "tracking_uri": "none",
        **({"local_epochs": 1} if args.quick else {}),
        **({"learning_rate": args.learning_rate} if args.learning_rate else {}),
    }
    unprotected = {"strategy": "fedavg", "max_site_weight": 1.0, "update_norm_bound": 0.0}
    arms = {
        "clean fedavg (defaults)": ({}, InProcessGrid),
        "attacked fedavg (defaults)": ({}, MaliciousGrid),
        "attacked fedavg (unprotected)": (unprotected, MaliciousGrid),
        "clean fedmedian (defaults)": ({"strategy": "fedmedian"}, InProcessGrid),
    }
    data, work = out / "data", out / "work"
    write_federation(data, n_sites=N_SITES, seed=0, preset=args.preset)
    dice, largest, seconds = {}, {}, {}
    for name, (overrides, grid) in arms.items():
        clock = time.monotonic()
        run_dir = out / "runs" / name.replace(" ", "_").replace("(", "").replace(")", "")
        run_federation(data, run_dir, work, run_config(**base, **overrides), N_SITES, grid)
        dice[name], largest[name] = pooled_dice(run_dir), largest_norm_site(run_dir)
        seconds[name] = time.monotonic() - clock
    clean = dice["clean fedavg (defaults)"]
    ratios = {
        "poisoned_dice_drop": clean - dice["attacked fedavg (defaults)"],
        "unprotected_poisoned_dice_drop": clean - dice["attacked fedavg (unprotected)"],
        "robust_over_fedavg_clean": dice["clean fedmedian (defaults)"] / clean if clean else float("nan"),
    }
    table = markdown_table(
        ["run", "pooled Dice", "largest update norm", "seconds"],
        [[name, f"{dice[name]:.3f}", largest[name], f"{seconds[name]:.0f}"] for name in arms],
    )
    setup = (
        f"data: `oncofed synth --preset {args.preset} --sites {N_SITES} --seed 0`; model {args.model},"
        f" {rounds} rounds; the attacker (last site) claims {CLAIMED:g} cases and sends its update ×{SCALE:g}"
    )
    notes = [setup]
    report("adversaries", args.results, [table], ratios, notes, started)


if __name__ == "__main__":
    main()
