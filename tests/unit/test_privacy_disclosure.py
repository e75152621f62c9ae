"""k-suppression at the site: below its own minimum a site's evaluate reply carries no number about its cases,
and only the site (never the coordinator's run config) sets that minimum in deployment."""

import re

import numpy as np
import pytest
from flwr.app import RecordDict

from models.shared.labels import evaluation_regions
from models.shared.node_config import DEFAULT_MIN_REPORT_CASES
from models.shared.run_config import SIM_MIN_REPORT_CASES, defaults
from models.shared.wire import COUNTS, METRICS, STATS
from site_app.disclosure.validation_replies import ValidationPolicy, evaluation_content
from site_app.learning.metrics import case_metrics
from site_app.learning.validation import CaseEvaluation
from site_app.settings.run_settings import SiteRunSettings

DEPLOYED = {"data-path": "/data/site", "work-path": "/work/site", "site-name": "hospital-x"}
SIMULATED = {"partition-id": 0, "num-partitions": 2}
AGGREGATE_KEY = re.compile(
    rf"({'|'.join(METRICS)})-(wt|tc|et)-({'|'.join(STATS)})|({'|'.join(COUNTS)})-(wt|tc|et)"
    r"|dice-mean(-ci-low|-ci-high)?|n-cases|n-skipped|num-examples"
)


def site_minimum(node_config: dict, run_config: dict) -> int:
    """The minimum a site applies, read the way its ClientApp reads it: run config -> settings -> policy."""
    settings = SiteRunSettings.from_run_config({**defaults(), **run_config})
    return ValidationPolicy.for_site(settings, node_config).min_report_cases


def test_a_deployed_site_sets_its_own_minimum():
    assert site_minimum(DEPLOYED, {}) == DEFAULT_MIN_REPORT_CASES == 5
    assert site_minimum({**DEPLOYED, "min-report-cases": 12}, {}) == 12


def test_the_coordinators_run_config_cannot_lower_a_deployed_sites_minimum():
    # The attack: a coordinator sets the simulation minimum (and a look-alike key) to 1 in the run config.
    lowering = {"sim-min-report-cases": 1, "min-report-cases": 1}
    assert site_minimum(DEPLOYED, lowering) == DEFAULT_MIN_REPORT_CASES
    assert site_minimum({**DEPLOYED, "min-report-cases": 8}, lowering) == 8


def test_a_simulation_takes_its_minimum_from_the_run_config():
    assert site_minimum(SIMULATED, {}) == SIM_MIN_REPORT_CASES.default == 1
    assert site_minimum(SIMULATED, {"sim-min-report-cases": 3}) == 3


@pytest.mark.parametrize("value", [0, -2, "5", 2.5, True])
def test_a_minimum_that_is_not_a_whole_number_of_at_least_one_is_refused(value):
    with pytest.raises(ValueError, match="node config `min-report-cases`"):
        site_minimum({**DEPLOYED, "min-report-cases": value}, {})
    with pytest.raises(ValueError, match="sim-min-report-cases"):
        site_minimum(SIMULATED, {"sim-min-report-cases": value})


def cases(n: int) -> list[CaseEvaluation]:
    rng = np.random.default_rng(n)
    results = []
    for index in range(n):
        truth = np.zeros((12, 12, 12), dtype=np.uint8)
        truth[3:8, 3:8, 3:8] = 2
        truth[4:6, 4:6, 4:6] = 3
        pred = np.roll(truth, int(rng.integers(0, 3)), axis=index % 3)
        spacing = (1.0, 1.0, float(rng.uniform(1, 3)))
        results.append(
            CaseEvaluation(
                case_id=f"patient-{index}",
                spacing_mm=spacing,
                metrics=case_metrics(pred, truth, spacing, evaluation_regions("brats")),
                image=np.zeros(1),
                truth=truth,
                prediction=pred,
            )
        )
    return results


def policy(minimum: int) -> ValidationPolicy:
    settings = SiteRunSettings.from_run_config({**defaults(), "seed": 3})
    return ValidationPolicy.for_site(settings, {**DEPLOYED, "min-report-cases": minimum})


def numbers_in(content: RecordDict) -> list[float]:
    found = [v for record in content.metric_records.values() for v in record.values()]
    for record in content.config_records.values():
        for value in record.values():
            found += [
                v for v in (value if isinstance(value, list) else [value]) if isinstance(v, int | float)
            ]
    return found


def test_below_the_minimum_no_number_about_the_cases_leaves():
    content = evaluation_content(cases(4), n_skipped=1, policy=policy(5), bootstrap_seed=11)
    assert not content.metric_records
    validation = content.config_records["validation"]
    assert validation["status"] == "suppressed" and validation["min-report-cases"] == 5
    assert validation["reason"] == "n < 5"
    # Every number left is a convention every site shares (tolerance, penalty, bootstrap settings) or the minimum.
    conventions = evaluation_content(cases(7), 0, policy(5), bootstrap_seed=11).config_records["validation"]
    shared = {k: v for k, v in conventions.items() if isinstance(v, int | float) and k != "status"}
    assert {k: v for k, v in validation.items() if isinstance(v, int | float)} == shared
    assert numbers_in(content) == list(shared.values())


def test_at_the_minimum_only_aggregates_leave():
    results = cases(5)
    content = evaluation_content(results, n_skipped=0, policy=policy(5), bootstrap_seed=11)
    assert content.config_records["validation"]["status"] == "reported"
    (metrics,) = content.metric_records.values()
    assert metrics["num-examples"] == 5 and metrics["n-cases"] == 5
    assert all(AGGREGATE_KEY.fullmatch(key) for key in metrics), [
        k for k in metrics if not AGGREGATE_KEY.fullmatch(k)
    ]
    assert all(not isinstance(value, list) for value in metrics.values())
    assert not any("patient" in str(v) for record in content.config_records.values() for v in record.values())
