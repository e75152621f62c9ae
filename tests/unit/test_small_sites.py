"""The consortium's smallest site (3 cases, small multifocal tumors): its split keeps 2 training cases and 1
validation case; it trains, keeps its local-only and personalized models and reports them when its thresholds
allow, and declines or suppresses, saying why, when they do not."""

from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from data_prep.synth.federation import write_site
from data_prep.synth.profiles import site_profiles
from models.presets import build_model
from models.shared.wire import (
    LOCAL_ONLY_PREFIX,
    MEAN_DICE,
    N_CASES,
    PERSONALIZED_OVER_LOCAL_PREFIX,
    PERSONALIZED_PREFIX,
    Record,
    Status,
    Training,
    Validation,
    baseline_key,
)
from models.weights import to_record
from site_app.app import app
from site_app.disclosure.validation_split import SPLIT_FILE

RUN_CONFIG = {
    "model-preset": "tiny",
    "local-epochs": 1,
    "learning-rate": 0.01,
    "batch-size": 2,
    "patch-size": 16,
    "samples-per-case": 1,
    "spacing-mm": 4.0,
    "seed": 0,
    "eval-regions": "brats",
    "local-baseline": True,
    "personalize-epochs": 1,
}


@pytest.fixture(scope="module")
def smallest_site(tmp_path_factory) -> Path:
    """The consortium preset's last site (3 cases), as `oncofed synth --preset consortium` writes it."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    profile = site_profiles("consortium", 6, 0)[-1]
    assert profile.n_cases == 3
    data = tmp_path_factory.mktemp("consortium") / "data"
    data.mkdir()
    write_site(data, profile, 0)
    yield data
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


def send(kind: str, data: Path, work: Path, server_round: int, **thresholds: int) -> RecordDict:
    """One instruction to the site's ClientApp with the simulated site's thresholds (sim-… run settings)."""
    content = RecordDict(
        {
            "arrays": to_record(build_model("tiny", seed=server_round)),
            "config": ConfigRecord({"server-round": server_round, "run-key": "0123456789abcdef"}),
        }
    )
    run_config = {
        **RUN_CONFIG,
        **{f"sim-{key.replace('_', '-')}": value for key, value in thresholds.items()},
        "sim-data": str(data),
        "sim-work": str(work),
    }
    context = Context(
        run_id=1,
        node_id=2,
        node_config={"partition-id": 0, "num-partitions": 1},
        state=RecordDict(),
        run_config=run_config,
    )
    reply = app(Message(content, dst_node_id=2, message_type=kind), context)
    assert not reply.has_error(), reply.error.reason
    return reply.content


def test_a_three_case_site_trains_and_reports_its_one_validation_case(smallest_site, tmp_path):
    """With thresholds its operator lowered to what it has (train on 2, report 1), it takes part fully: weights,
    local-only and personalized aggregates, position statistics withheld (n < min-position-cases)."""
    work = tmp_path / "work"
    lowered = {"min_train_cases": 2, "min_report_cases": 1}
    assert (
        send("evaluate", smallest_site, work, 0, **lowered)[Record.VALIDATION][Validation.STATUS]
        == "reported"
    )
    split = (work / "hospital-f" / SPLIT_FILE).read_text()
    assert split.count('"validation"') == 1 and split.count('"training"') == 2

    trained = send("train", smallest_site, work, 1, **lowered)
    assert Record.TRAINING not in trained and trained.array_records  # weights, not declined

    reply = send("evaluate", smallest_site, work, 1, **lowered)
    assert reply[Record.VALIDATION][Validation.STATUS] == Status.REPORTED
    metrics = reply[Record.METRICS]
    assert metrics[N_CASES] == 1 and 0.0 <= metrics[MEAN_DICE] <= 1.0
    for prefix in (LOCAL_ONLY_PREFIX, PERSONALIZED_PREFIX, PERSONALIZED_OVER_LOCAL_PREFIX):
        assert baseline_key(prefix, "dice", None, "mean") in metrics, prefix
    withheld = list(reply[Record.VALIDATION][Validation.WITHHELD])
    assert {w.split()[0] for w in withheld} == {"median", "q1", "q3"} and all(
        "(n < 10)" in w for w in withheld
    )
    assert not any(k.endswith(("-median", "-q1", "-q3")) for k in metrics)


def test_with_the_default_thresholds_it_declines_and_suppresses_and_says_why(smallest_site, tmp_path):
    """At the deployed defaults (5 training cases, 5 reported cases) the same site sends no weights and no number
    about its cases; each reply names the rule."""
    work = tmp_path / "work"
    defaults = {"min_train_cases": 5, "min_report_cases": 5}
    declined = send("train", smallest_site, work, 1, **defaults)
    assert declined[Record.TRAINING][Training.STATUS] == Status.DECLINED
    assert declined[Record.TRAINING][Training.REASON] == "n < 5" and not declined.array_records
    suppressed = send("evaluate", smallest_site, work, 1, **defaults)
    assert suppressed[Record.VALIDATION][Validation.STATUS] == Status.SUPPRESSED
    assert suppressed[Record.VALIDATION][Validation.REASON] == "n < 5" and not suppressed.metric_records
