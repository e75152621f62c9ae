"""Playing an adaptive coordinator: it sends any model, any number of requests and any setting the app accepts.

(a) Models that differ in one unused low bit give the same per-case values: with the bootstrap seeded from the
    model, each would bring fresh CI endpoints (integer combinations of the same sorted case values) to solve
    for them. Seeded from the site secret and the released case set only, every such model gets the same CI.
(b) A sweep of `min-lesion-mm3` across evaluations would move lesion counts one lesion at a time: the setting is
    the site's, and the run's (or a `sim-` one sent to a deployed site) moves nothing.
(c) A refused or suppressed reply's reason names settings, limits and k: no single case's figure and no count of
    changed cases below k.
(d) The best conditions for gradient inversion (batch size 1, one patch per case, one local step) are refused,
    naming the bound; a site that lowers its own bound trains.

The replies come from the site's real ClientApp (site_app.app) on a small synthetic hospital (tiny phantoms at
4 mm); the controls reproduce today's behaviour where the attack needs it.
"""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from synthetic_site import add_nifti_cases, fix_site_secret

from models.presets import build_model
from models.shared.node_config import DEFAULT_MIN_TRAIN_CASES
from models.shared.run_config import defaults
from models.shared.wire import COUNTS, METRICS
from models.weights import to_record
from site_app.app import app
from site_app.disclosure.policy import bootstrap_seed
from site_app.disclosure.validation_replies import ValidationPolicy, evaluation_content
from site_app.disclosure.validation_split import VALIDATION, record_released, released_set
from site_app.learning.validation import CaseEvaluation
from site_app.learning.work_records import PER_CASE_FILE
from site_app.settings.limits import SiteLimits, check_local_steps, check_run_settings
from site_app.settings.run_settings import SiteRunSettings
from site_app.settings.secret import keyed_seed

RUN_CONFIG = {
    "model-preset": "tiny",
    "local-epochs": 1,
    "learning-rate": 0.002,
    "batch-size": 4,
    "patch-size": 16,
    "samples-per-case": 2,
    "spacing-mm": 4.0,
    "seed": 0,
    "eval-regions": "brats",
}
SECRET_BYTE = 4


@pytest.fixture(scope="module", autouse=True)
def flower_task_ids():
    """Messages built as a ServerApp builds them, for the module-scoped exchanges."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


@pytest.fixture(scope="module")
def hospital(tmp_path_factory) -> tuple[Path, Path]:
    """A 10-case hospital keeping half for validation (5 cases, its minimum): its data and work folders."""
    root = tmp_path_factory.mktemp("adaptive")
    add_nifti_cases(root / "data", 0, 10, spacing_mm=4.0)
    fix_site_secret(root / "work", SECRET_BYTE)
    return root / "data", root / "work"


def site(hospital: tuple[Path, Path], **node: object) -> dict:
    """The hospital's node config as its launcher writes it: default limits unless `node` sets others, but for
    an evaluation budget these tests' many evaluations of run 1, round 0 stay within (the budget's test sets its
    own)."""
    data, work = hospital
    return {
        "site-name": "hospital-a",
        "data-path": str(data),
        "work-path": str(work),
        "validation-fraction": 0.5,
        "limits.max-evaluations-per-round": 1000,
        **node,
    }


def ask(
    kind: str,
    node: dict,
    run_config: dict,
    arrays: ArrayRecord | None = None,
    server_round: int = 0,
    run_id: int = 1,
) -> Message:
    """One instruction to the site's ClientApp, as the coordinator sends it; the site's reply."""
    content = RecordDict(
        {
            "arrays": arrays if arrays is not None else to_record(build_model("tiny", seed=0)),
            "config": ConfigRecord({"server-round": server_round}),
        }
    )
    message = Message(content, dst_node_id=2, message_type=kind)
    context = Context(run_id=run_id, node_id=2, node_config=node, state=RecordDict(), run_config=run_config)
    reply = app(message, context)
    assert not reply.has_error(), reply.error.reason
    return reply


def metrics_of(reply: Message) -> dict:
    return dict(reply.content.metric_records["metrics"]) if "metrics" in reply.content.metric_records else {}


def record_of(reply: Message, name: str) -> dict:
    return dict(reply.content.config_records[name])


def low_bit_variant(index: int) -> ArrayRecord:
    """The tiny model with one weight moved by one unit in the last place (its lowest mantissa bit)."""
    model = build_model("tiny", seed=0)
    parameters = [p for p in model.parameters() if p.numel() > 1]
    flat = parameters[index % len(parameters)].data.view(-1)
    position = index // len(parameters)
    flat[position] = torch.nextafter(flat[position], torch.tensor(float("inf")))
    return to_record(model)


def numbers_in(text: str) -> set[float]:
    return {float(n.replace(",", "")) for n in re.findall(r"\d[\d,]*(?:\.\d+)?", text)}


# (a) The bootstrap seed


def test_models_differing_in_one_low_bit_get_identical_intervals(hospital):
    """Through the site's app: the same case values (the attack's premise) and the same CI for every variant."""
    replies = [metrics_of(ask("evaluate", site(hospital), RUN_CONFIG, low_bit_variant(i))) for i in range(4)]
    assert replies[0]["num-examples"] == 5
    assert any(
        key.endswith("ci-low") and replies[0][key] != replies[0][key[: -len("ci-low")] + "mean"]
        for key in replies[0]
    )
    records = [json.loads(line) for line in (hospital[1] / PER_CASE_FILE).read_text().splitlines()]
    assert (
        len({json.dumps(sorted(r["metrics"].items())) for r in records}) == 5
    )  # 5 cases, same values each time
    assert all(reply == replies[0] for reply in replies)


def synthetic_results(n: int) -> list[CaseEvaluation]:
    rng = np.random.default_rng(n)
    results = []
    for index in range(n):
        metrics = {f"{m}-{r}": float(rng.uniform(0.2, 0.95)) for m in METRICS for r in ("wt", "tc", "et")}
        metrics |= {f"{c}-{r}": 0.0 for c in COUNTS for r in ("wt", "tc", "et")}
        results.append(
            CaseEvaluation(f"case-{index}", (1.0, 1.0, 1.0), metrics, np.zeros(1), np.zeros(1), np.zeros(1))
        )
    return results


def endpoints(reply: RecordDict) -> tuple[float, ...]:
    metrics = dict(reply["metrics"])
    return tuple(v for k, v in sorted(metrics.items()) if k.endswith(("ci-low", "ci-high")))


def test_fifty_low_bit_models_give_one_set_of_endpoints_where_model_seeding_gives_fifty():
    """50 evaluations of the same cases under 50 one-bit model variants: one endpoint set with today's seeding;
    the control (the seed keyed on the model's bytes, as before) gives 50 sets to solve for the case values."""
    secret, results = bytes([SECRET_BYTE]) * 32, synthetic_results(8)
    cases = [r.case_id for r in results]
    policy = ValidationPolicy.for_site(
        SiteRunSettings.from_run_config({}), {"data-path": "/d", "work-path": "/w"}
    )

    def model_keyed(arrays: ArrayRecord) -> int:  # the control: today's behaviour before this change
        digest = hashlib.sha256()
        for name in sorted(arrays.keys()):
            digest.update(name.encode() + arrays[name].numpy().tobytes())
        return keyed_seed(secret, "bootstrap", digest.digest(), *sorted(cases))

    variants = [low_bit_variant(i) for i in range(50)]
    control = {endpoints(evaluation_content(results, 0, policy, model_keyed(v))) for v in variants}
    ours = {
        endpoints(evaluation_content(results, 0, policy, bootstrap_seed(secret, cases))) for _ in variants
    }
    assert len(control) == 50
    assert len(ours) == 1


# (b) min-lesion-mm3


def test_a_min_lesion_sweep_by_the_coordinator_moves_nothing(hospital):
    """The run's `min-lesion-mm3` and `sim-min-lesion-mm3` are ignored at a deployed site; the control, the
    site's own setting, does move the lesion counts (so the sweep would have worked as a run setting)."""
    sweep = [0.0, 512.0, 1e9]
    swept = [
        metrics_of(ask("evaluate", site(hospital), {**RUN_CONFIG, key: v}))
        for key in ("min-lesion-mm3", "sim-min-lesion-mm3")
        for v in sweep
    ]
    assert all(reply == swept[0] for reply in swept)
    control = [
        metrics_of(ask("evaluate", site(hospital, **{"min-lesion-mm3": v}), RUN_CONFIG)) for v in (0.0, 1e9)
    ]
    assert control[0] == swept[0]
    assert control[1] != control[0]
    moved = [k for k in control[0] if k.startswith(("lesions-", "avd-")) and control[1][k] != control[0][k]]
    assert moved


# (c) Reasons


def test_a_refused_reason_names_no_case_size(hospital):
    node = site(hospital, **{"limits.max-resampled-voxels": 1000})
    reply = ask("evaluate", node, {**RUN_CONFIG, "spacing-mm": 0.9})
    validation = record_of(reply, "validation")
    assert validation["status"] == "refused" and validation["limit"] == "limits.max-resampled-voxels"
    assert numbers_in(validation["reason"]) <= {0.9, 16.0, 1000.0}, validation["reason"]


def test_a_suppressed_reason_carries_no_count_below_k(tmp_path):
    reported = [f"case-{i}" for i in range(5)]
    record_released(tmp_path, VALIDATION, reported)
    added = released_set(tmp_path, VALIDATION, [*reported, "case-5", "case-6"], 5)
    lost = released_set(tmp_path, VALIDATION, [*reported[1:], "case-5", "case-6"], 5)
    assert added.cases == frozenset(reported) and lost.cases is None
    for reason in (added.reason, lost.reason):
        assert numbers_in(reason) == {5.0}, reason


# (d) Lower bounds against gradient inversion


@pytest.mark.parametrize(
    ("setting", "value", "limit"),
    [("batch-size", 1, "limits.batch-size-min"), ("samples-per-case", 1, "limits.samples-per-case-min")],
)
@pytest.mark.parametrize("kind", ["train", "evaluate"])
def test_the_best_conditions_for_gradient_inversion_are_refused(hospital, kind, setting, value, limit):
    reply = ask(kind, site(hospital), {**RUN_CONFIG, setting: value}, server_round=1)
    record = record_of(reply, "training" if kind == "train" else "validation")
    assert (
        record["status"] == "refused"
        and record["limit"] == limit
        and "arrays" not in reply.content.array_records
    )
    assert f"below this site's limit {limit}" in record["reason"]


def test_one_local_step_is_refused_naming_the_bound_and_no_case_figure(hospital):
    """5 training cases x 2 patches / batch 4, one epoch: 3 steps, below local-steps-min 10. The reason names the
    run settings and the bound; a site that lowers its own bound (the control) trains and sends weights."""
    reply = ask("train", site(hospital), RUN_CONFIG, server_round=1)
    training = record_of(reply, "training")
    assert training["status"] == "refused" and training["limit"] == "limits.local-steps-min"
    assert not reply.content.array_records
    assert numbers_in(training["reason"]) <= {1.0, 4.0, 2.0, 10.0}, training["reason"]
    lowered = ask("train", site(hospital, **{"limits.local-steps-min": 3}), RUN_CONFIG, server_round=1)
    assert lowered.content.array_records and "training" not in lowered.content.config_records


def test_the_default_run_settings_are_within_a_default_sites_bounds():
    """The bounds refuse the coordinator's extreme settings, not its defaults: a default run trains at a default
    site with as few training cases as it trains on at all (min-train-cases)."""
    settings = SiteRunSettings.from_run_config(defaults())
    limits = SiteLimits.from_node_config({})
    check_run_settings(settings, limits)
    check_local_steps(settings, DEFAULT_MIN_TRAIN_CASES, limits)


# An evaluation budget


def test_beyond_its_evaluation_budget_a_site_refuses_and_says_which_budget(hospital):
    """The adaptive coordinator asks for the same round again and again (each reply more equations in the same
    case values): the third request of a round is refused under the default budget (2 per round); the control,
    the same request at a site that raised its budget, is answered. The run-wide budget holds whatever round
    number the coordinator sends."""
    node = {k: v for k, v in site(hospital).items() if k != "limits.max-evaluations-per-round"}
    replies = [ask("evaluate", node, RUN_CONFIG, server_round=1, run_id=7) for _ in range(3)]
    assert [record_of(r, "validation")["status"] for r in replies] == ["reported", "reported", "refused"]
    refused = record_of(replies[2], "validation")
    assert refused["reason"].startswith("evaluation budget") and not replies[2].content.metric_records
    assert (refused["setting"], refused["limit"], refused["bound"]) == (
        "evaluations",
        "limits.max-evaluations-per-round",
        2,
    )
    raised = ask(
        "evaluate", {**node, "limits.max-evaluations-per-round": 3}, RUN_CONFIG, server_round=1, run_id=7
    )
    assert record_of(raised, "validation")["status"] == "reported"

    run_wide = {**node, "limits.max-evaluations-per-run": 1}
    assert record_of(ask("evaluate", run_wide, RUN_CONFIG, server_round=1, run_id=8), "validation")[
        "status"
    ] == ("reported")
    other_round = record_of(ask("evaluate", run_wide, RUN_CONFIG, server_round=2, run_id=8), "validation")
    assert other_round["status"] == "refused" and other_round["limit"] == "limits.max-evaluations-per-run"
