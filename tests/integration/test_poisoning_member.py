"""One malicious member of four trains with the federation and poisons its replies; the honest sites' model holds.

Each test runs whole federations in this process (bench/in_process.py: the real ServerApp and ClientApps, the
real preprocessing, training and validation; only Flower's transport between processes is left out). The last
site is the attacker (bench/poisoning_member.py): it describes itself with 10^6 usable cases, claims them in every
train reply, and sends its honest update ×100, ×−100, or what it trained on its cases with the labels permuted.
The measure is the pooled mean Dice over the three honest sites' validation cases after the last round, against
the same run without the attacker: with the app's defaults it stays within 0.03, and the run's report names the
attacker (by its update norm; the swapped-labels one, whose norm is an honest one's, by its direction); on the
unprotected path (fedavg, `max-site-weight` 1, `update-norm-bound` 0, `update-min-cosine` −1: the control) the same
attack costs more than 0.3.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.presets import build_model
from models.shared.run_config import MAX_SITE_WEIGHT, UPDATE_NORM_BOUND
from models.weights import load_checkpoint, to_record

BENCH = Path(__file__).resolve().parents[2] / "bench"
# The attacker and the in-process federation live with the benchmark that measures the same attacks.
sys.path.insert(0, str(BENCH))
import poisoning_member
from common import run_config

ATTACKER = "hospital-d"
UNPROTECTED = {
    "strategy": "fedavg",
    "max_site_weight": 1.0,
    "update_norm_bound": 0.0,
    "update_norm_median_factor": 0.0,
    "update_norm_drop_factor": 0.0,
    "update_min_cosine": -1.0,
}
"""Plain FedAvg with the bounds off: each setting's value that switches it off."""
ROBUST: dict[str, object] = {}
"""The protected runs: the app's defaults (weight cap, norm bound, direction check around FedAvg)."""
LEARNS = {
    "model_preset": "tiny",
    "spacing_mm": 3.0,
    "patch_size": 24,
    "learning_rate": 0.01,
    "lr_schedule": "cosine",
    "num_server_rounds": 5,
    "sim_min_report_cases": 1,
    "sim_min_train_cases": 1,
    "tracking_uri": "none",
}
"""A run whose clean model reaches a clearly non-trivial Dice in 5 rounds on a CPU, on the `demo` preset's heads
(4 sites) at a coarse grid: the tiny UNet, 3 mm voxels, 24³ patches, 5 × the app's learning rate falling over the
rounds (cosine), so that the last rounds settle (bench/adversaries.py measures the same). The defences are the
app's defaults."""


def federation(root: Path, preset: str) -> Path:
    poisoning_member.write_data(root / "data", preset)
    return root


def run(root: Path, name: str, attack: str | None, **settings: object) -> Path:
    config = run_config(**{**LEARNS, **settings})
    return poisoning_member.run(root / "data", root / "work", root / "runs" / name, config, attack)


def dice(run_dir: Path) -> float:
    return poisoning_member.honest_pooled_dice(run_dir, ATTACKER)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return federation(tmp_path_factory.mktemp("poisoning-demo"), "demo")


@pytest.fixture(scope="module")
def clean(demo) -> dict[str, float]:
    """The honest sites' pooled Dice without the attacker: with the robust setting and unprotected."""
    found = {
        arm: dice(run(demo, f"clean-{arm}", None, **s))
        for arm, s in (("robust", ROBUST), ("unprotected", UNPROTECTED))
    }
    assert found["unprotected"] > 0.5, found  # the clean model learns: a drop of 0.3 can be measured
    return found


@pytest.mark.slow  # two 5-round federations (and the two clean ones once per module): minutes on two cores
@pytest.mark.parametrize("attack", poisoning_member.ATTACKS)
def test_one_poisoning_member_of_four_moves_the_honest_sites_dice_by_at_most_003(demo, clean, attack):
    defended = run(demo, f"{attack}-robust", attack, **ROBUST)
    assert clean["robust"] - dice(defended) <= 0.03
    if attack == "swapped-labels":  # its norm is an honest one's: its direction names it
        assert poisoning_member.report_least_aligned(defended) == ATTACKER
    else:
        assert poisoning_member.report_outlier(defended) == ATTACKER
        assert set(poisoning_member.largest_norm_sites(defended)) == {ATTACKER}
    control = run(demo, f"{attack}-unprotected", attack, **UNPROTECTED)
    assert clean["unprotected"] - dice(control) > 0.3


def test_the_norm_bound_and_weight_cap_engage_and_the_report_names_the_attacker(tmp_path):
    """One round of the ×100 attacker on the `tiny` preset: unprotected, the global model jumps by the attacker's
    update ×100; with the defaults it moves no further than the attacker's capped share of the bound plus the
    honest sites' share of their own updates, and either way the report names the attacker by its update norm."""
    root = federation(tmp_path, "tiny")
    quick = {"spacing_mm": 2.0, "patch_size": 0, "num_server_rounds": 1, "local_epochs": 1}
    moved = {}
    for arm, settings in (("defaults", {}), ("unprotected", UNPROTECTED)):
        run_dir = run(root, f"quick-{arm}", "scaled", **quick, **settings)
        assert poisoning_member.report_outlier(run_dir) == ATTACKER
        norms = poisoning_member.norms(run_dir)
        honest = max(max(v) for site, v in norms.items() if site != ATTACKER)
        assert norms[ATTACKER][0] > 50 * honest
        moved[arm] = (distance_moved(run_dir), honest, norms[ATTACKER][0])
    step, honest, _ = moved["defaults"]
    bound = MAX_SITE_WEIGHT.default * UPDATE_NORM_BOUND.default + (1 - MAX_SITE_WEIGHT.default) * honest
    assert step <= bound + 1e-3
    step, _, attacker = moved["unprotected"]
    assert step > 0.9 * attacker > 5 * bound  # FedAvg on ~10^6 claimed cases: the attacker's update, whole


def distance_moved(run_dir: Path) -> float:
    """L2 distance of the run's final global model from the initial one (the tiny preset's, seed 0)."""
    final = load_checkpoint(run_dir / "models" / "final.pt")[0]
    start = to_record(build_model("tiny", seed=0)).to_torch_state_dict()
    return float(
        np.sqrt(
            sum(float(torch.sum((final[k] - start[k]) ** 2)) for k in final if final[k].is_floating_point())
        )
    )
