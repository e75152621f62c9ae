"""A scripted federation for the tracking tests: the ServerApp on a ScriptedGrid with sites that reply as real
sites do (site_app.disclosure.validation_replies), tracking on.

hospital-a and hospital-c report on 3 and 4 cases (their medians and quartiles withheld: fewer than
min-position-cases 10); hospital-b suppresses everything (3 cases, below its min-report-cases 5).
"""

from pathlib import Path

import numpy as np
from flwr.app import RecordDict
from scripted_grid import ScriptedSite, scripted_run_config

from models.shared.labels import evaluation_regions
from models.shared.run_config import defaults
from server_app.app import FabIdentity
from site_app.disclosure.validation_replies import ValidationPolicy, evaluation_content
from site_app.learning.metrics import case_metrics
from site_app.learning.validation import CaseEvaluation
from site_app.settings.run_settings import SiteRunSettings

SITES = ["hospital-a", "hospital-b", "hospital-c"]
FAB = FabIdentity("oncofed/oncofed", "0.1.0", "cd" * 32)


def site_reply(n_cases: int, seed: int, min_report_cases: int) -> RecordDict:
    """The evaluate reply a real site sends (site_app.disclosure.validation_replies) for small synthetic masks."""
    rng = np.random.default_rng(seed)
    results = []
    for index in range(n_cases):
        truth = np.zeros((12, 12, 12), dtype=np.uint8)
        truth[3:8, 3:8, 3:8] = 2
        truth[4:6, 4:6, 4:6] = 3
        prediction = np.roll(truth, int(rng.integers(0, 3)), axis=index % 3)
        metrics = case_metrics(prediction, truth, (1.0, 1.0, 2.0), evaluation_regions("brats"))
        results.append(
            CaseEvaluation(f"case-{index}", (1.0, 1.0, 2.0), metrics, np.zeros(1), truth, prediction)
        )
    node_config = {
        "data-path": "/d",
        "work-path": "/w",
        "site-name": "x",
        "min-report-cases": min_report_cases,
    }
    policy = ValidationPolicy.for_site(SiteRunSettings.from_run_config(defaults()), node_config)
    return evaluation_content(results, 0, policy, bootstrap_seed=seed)


def scripted_sites(first_node: int = 11) -> dict[int, ScriptedSite]:
    """The three sites under node ids from `first_node` (a new coordinator numbers them anew)."""
    sites = {
        first_node + i: ScriptedSite(name, offset=0.1 * (i + 1), train_cases=6)
        for i, name in enumerate(SITES)
    }
    for node, (n_cases, min_report_cases) in zip(sites, [(3, 1), (3, 5), (4, 1)], strict=True):
        sites[node].evaluate = lambda message, n=n_cases, k=min_report_cases, node=node: site_reply(
            n, node + message.content["config"]["server-round"], k
        )
    return sites


def run_config(run_dir: Path, **settings) -> dict:
    """The scripted federation's run config with tracking on: the default store, unless `tracking_uri` is given."""
    return scripted_run_config(run_dir, SITES, **{"tracking_uri": "", **settings})
