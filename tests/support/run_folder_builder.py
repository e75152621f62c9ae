"""A finished run folder without running a federation, for fast tests of what is built from one (model card,
export's training summary). Written by the project's own writers: RunFolder, the sites' aggregates of per-case
metrics computed on small synthetic masks, the validation conventions, checkpoints and app.json.

Two sites: REPORTING sends aggregates over 6 validation cases; SUPPRESSED has 3, below its minimum of 5.
"""

import tomllib
from pathlib import Path

import numpy as np
from model_checkpoints import SOME_EDEMA, biased_checkpoint

from models.shared.labels import evaluation_regions
from models.shared.wire import N_SKIPPED, NUM_EXAMPLES, Overview, Status
from server_app.app_identity import write_app_identity
from server_app.run_record.best_model import BestRound
from server_app.run_record.run_folder import COMPLETED, RunFolder, read_metrics
from server_app.run_record.summary import build_summary
from site_app.disclosure.aggregates import site_aggregates
from site_app.disclosure.policy import DisclosurePolicy
from site_app.disclosure.validation_replies import ValidationPolicy, conventions
from site_app.learning.metrics import case_metrics

REPO = Path(__file__).resolve().parents[2]
REPORTING_SITE, SUPPRESSED_SITE = "hospital-north", "hospital-south"
FAB_HASH = "ab" * 32
SPACING_MM = (2.0, 2.0, 3.0)


def _per_case(seed: int, n_cases: int, regions) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n_cases):
        truth = np.zeros((16, 16, 16), dtype=np.uint8)
        corner = rng.integers(3, 6, size=3)
        truth[tuple(slice(c, c + 6) for c in corner)] = 2
        truth[tuple(slice(c + 2, c + 4) for c in corner)] = 3
        prediction = np.roll(truth, int(rng.integers(0, 2)), axis=0)
        cases.append(case_metrics(prediction, truth, SPACING_MM, regions))
    return cases


def fake_run(run_dir: Path, rounds: int = 1) -> Path:
    defaults = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    run_config = {
        **defaults,
        "num-server-rounds": rounds,
        "model-preset": "tiny",
        "patch-size": 16,
        "spacing-mm": 4.0,
        "run-dir": str(run_dir),
    }
    run = RunFolder.create(run_dir, run_config)
    write_app_identity(run_dir, "oncofed/oncofed", "0.1.0", FAB_HASH)
    regions = evaluation_regions("brats")
    policy = ValidationPolicy(
        regions=regions,
        region_set="brats",
        disclosure=DisclosurePolicy(
            min_report_cases=5, min_position_cases=10, min_train_cases=5, validation_fraction=0.2
        ),
    )
    shared = conventions(policy)
    for server_round in range(rounds + 1):
        per_case = _per_case(server_round, 6, regions)
        metrics = site_aggregates(per_case, list(regions), seed=0, min_position_cases=10)
        run.append_metrics(
            {
                "round": server_round,
                "site": REPORTING_SITE,
                "status": Status.REPORTED,
                "min_report_cases": 5,
                "n_cases": len(per_case),
                "metrics": {**metrics, N_SKIPPED: 0},
                "conventions": shared,
                "train": {NUM_EXAMPLES: 20, "train-loss": 1.0} if server_round else None,
            }
        )
        run.append_metrics(
            {
                "round": server_round,
                "site": SUPPRESSED_SITE,
                "status": Status.SUPPRESSED,
                "min_report_cases": 5,
                "n_cases": None,
                "metrics": {},
                "conventions": shared,
                "train": {NUM_EXAMPLES: 10, "train-loss": 1.2} if server_round else None,
            }
        )
    overview = {
        REPORTING_SITE: {
            Overview.N_CASES_USABLE: 26,
            Overview.N_CASES_EXCLUDED: 1,
        },
        SUPPRESSED_SITE: {
            Overview.N_CASES_USABLE: 13,
            Overview.N_CASES_EXCLUDED: 0,
        },
    }
    for name in ("final", "best"):
        biased_checkpoint(run_dir / "models" / f"{name}.pt", SOME_EDEMA, spacing_mm=4.0, patch_size=16)
    best = BestRound(round=rounds, scores={REPORTING_SITE: (0.5, 6)}, compared_on=[REPORTING_SITE])
    run.write_summary(
        build_summary(
            read_metrics(run_dir), {}, best, overview, rounds, 1.0, status=COMPLETED, last_round=rounds
        )
    )
    return run_dir
