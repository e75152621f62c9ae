"""Playing the coordinator against a site, with everything the site's replies contain (and nothing else).

(a) n = 5 … 30: quartiles + mean + a replayed bootstrap CI (the reconstruction from sorted case values) recover no case value
    from what a site now sends; the same attack recovers every value from what a site used to send (control).
(b) Two runs with another seed at the same site (same work folder), cases added in between, a case lost:
    differencing their replies gives no case value. The coordinator's run configs also carry a `val-fraction`: no
    longer a run setting, but a coordinator's own app may add any key, and none chooses the site's split.
(c) val-fraction 0.99 does not make a site train on fewer than its min-train-cases; below it, no weights leave.
(d) No number in any reply equals a per-case value the site keeps in validation/per-case.jsonl (0, 1 and the
    empty-mask penalty are shared by many cases by definition and are allowed).
Also: every run setting outside the site's limits is refused, naming the setting and the limit, with nothing cached.

The replies come from the site's real ClientApp (site_app.app), called with Flower Messages as a ServerApp builds
them, on small synthetic hospitals (tiny phantoms at 4 mm).
"""

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common.serde import message_to_proto
from flwr.supercore.task_identity import TaskIdentity
from scipy.optimize import brentq
from synthetic_site import add_nifti_cases, fix_site_secret

from models.presets import build_model
from models.shared.labels import evaluation_regions
from models.shared.wire import COUNTS, METRICS
from models.weights import to_record
from site_app.app import app
from site_app.disclosure import policy as disclosure_policy
from site_app.disclosure.aggregates import CI_LEVEL, bootstrap_indices
from site_app.disclosure.validation_replies import ValidationPolicy, evaluation_content
from site_app.learning.metrics import HD95_PENALTY_MM
from site_app.learning.validation import CaseEvaluation
from site_app.learning.work_records import PER_CASE_FILE
from site_app.settings.limits import OutsideSiteLimits, SiteLimits, check_run_settings
from site_app.settings.run_settings import SiteRunSettings
from site_app.settings.secret import SECRET_FILE

REGIONS = list(evaluation_regions("brats"))
RUN_SEED = 0
RUN_CONFIG = {
    "model-preset": "tiny",
    "local-epochs": 1,
    "learning-rate": 0.002,
    "batch-size": 2,
    "patch-size": 16,
    "samples-per-case": 1,
    "spacing-mm": 4.0,
    "seed": RUN_SEED,
    "eval-regions": "brats",
}
ALLOWED = {0.0, 1.0, HD95_PENALTY_MM}
"""Values many cases share by the metrics' definitions (perfect, none, empty-mask penalty)."""


# The coordinator's side: messages it sends, numbers it receives


@pytest.fixture(scope="module", autouse=True)
def flower_task_ids():
    """conftest's flower_task for the module-scoped exchanges: Messages built as a ServerApp builds them."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


TINY_SITE_LIMITS = {
    "limits.batch-size-min": 1,
    "limits.samples-per-case-min": 1,
    "limits.local-steps-min": 1,
    "limits.max-evaluations-per-round": 100,
}
"""These tiny hospitals lower their own bounds against gradient inversion, to train one patch per case quickly,
and answer every evaluation these tests send in one run's round 0."""


def deployed(data: Path, work: Path, **node: object) -> dict:
    return {
        "site-name": "hospital-a",
        "data-path": str(data),
        "work-path": str(work),
        **TINY_SITE_LIMITS,
        **node,
    }


def send(kind: str, node_config: dict, run_config: dict, server_round: int = 0, seed: int = 0) -> Message:
    """One message to the site's ClientApp, as the ServerApp sends it; the site's reply."""
    content = RecordDict(
        {
            "arrays": to_record(build_model("tiny", seed=seed)),
            "config": ConfigRecord({"server-round": server_round}),
        }
    )
    if kind == "query.describe":
        content = RecordDict()
    message = Message(content, dst_node_id=2, message_type=kind)
    context = Context(run_id=1, node_id=2, node_config=node_config, state=RecordDict(), run_config=run_config)
    reply = app(message, context)
    assert not reply.has_error(), reply.error.reason
    return reply


def numbers_in(reply: Message) -> list[float]:
    """Every number a reply carries outside the model weights: metrics and config values (lists included)."""
    found = []
    for record in [*reply.content.metric_records.values(), *reply.content.config_records.values()]:
        for value in record.values():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, int | float) and not isinstance(item, bool):
                    found.append(float(item))
    return found


def metrics_of(reply: Message) -> dict:
    return dict(reply.content.metric_records["metrics"]) if "metrics" in reply.content.metric_records else {}


def per_case_values(work: Path) -> tuple[set[float], list[dict]]:
    """The site's own per-case metric values and voxel edges (the integer lesion and empty-mask counts of single
    cases are 0, 1, 2, …: comparing them with sums and case counts says nothing), without the shared values."""
    records = [json.loads(line) for line in (work / PER_CASE_FILE).read_text().splitlines()]
    values = {float(v) for r in records for k, v in r["metrics"].items() if k.rsplit("-", 1)[0] in METRICS}
    values |= {float(s) for r in records for s in r["spacing_mm"]}
    return values - ALLOWED, records


# (a) Reconstruction from one reply


def synthetic_results(n: int, seed: int) -> list[CaseEvaluation]:
    """n cases with continuous, distinct metric values (as a real site's are) and small counts."""
    rng = np.random.default_rng(seed)
    ranges = {"dice": (0.3, 0.95), "hd95": (1.0, 40.0), "nsd": (0.2, 0.99), "avd": (0.1, 25.0)}
    results = []
    for index in range(n):
        metrics = {}
        for region in REGIONS:
            for metric in METRICS:
                low, high = ranges.get(metric, (0.4, 0.99))
                metrics[f"{metric}-{region}"] = float(rng.uniform(low, high))
            for count in COUNTS:
                metrics[f"{count}-{region}"] = float(rng.integers(0, 2))
        results.append(
            CaseEvaluation(
                f"case-{index:02d}", (1.0, 1.0, 3.0), metrics, np.zeros(1), np.zeros(1), np.zeros(1)
            )
        )
    return results


def naive_release(values: np.ndarray, seed: int) -> dict[str, float]:
    """What a site used to send about one metric: numpy's linear quartiles and a CI seeded with the run seed."""
    q1, median, q3 = np.percentile(values, [25.0, 50.0, 75.0])
    tail = (1.0 - CI_LEVEL) / 2.0
    low, high = np.quantile(values[bootstrap_indices(len(values), seed)].mean(axis=1), [tail, 1.0 - tail])
    return {"mean": values.mean(), "median": median, "q1": q1, "q3": q3, "ci-low": low, "ci-high": high}


def order_statistic_claims(stats: dict[str, float], n: int) -> list[float]:
    """A quartile numpy puts exactly on a position (p·(n−1) whole) is that case's value."""
    claims = []
    for stat, p in (("q1", 0.25), ("median", 0.5), ("q3", 0.75)):
        if stat in stats and float(p * (n - 1)).is_integer():
            claims.append(stats[stat])
    return claims


def replay_extremes(stats: dict[str, float], n: int, seeds: list[int]) -> list[float]:
    """n = 5: q1, median, q3 are the middle cases, the mean gives min + max, and the CI, replayed with each seed
    the coordinator knows, pins the split of min + max (trying every order of the cases, which it does not know)."""
    if n != 5 or not {"q1", "median", "q3", "ci-low", "ci-high"} <= set(stats):
        return []
    middle = [stats["q1"], stats["median"], stats["q3"]]
    total = 5 * stats["mean"] - sum(middle)
    high_end = min(stats["q1"], total - stats["q3"])
    tail = (1.0 - CI_LEVEL) / 2.0
    for seed in seeds:
        counts = np.stack([np.bincount(row, minlength=5) for row in bootstrap_indices(5, seed)])
        for order in itertools.permutations(range(5)):
            drawn = counts[:, order]  # drawn[:, slot]: how often the case in that slot was drawn

            def ci(t: float, drawn: np.ndarray = drawn) -> np.ndarray:
                values = np.array([t, *middle, total - t])
                return np.quantile(drawn @ values / 5.0, [tail, 1.0 - tail])

            grid = np.linspace(high_end - abs(total) - 10.0, high_end, 200)
            gaps = [ci(t)[0] - stats["ci-low"] for t in grid]
            for a, b, ga, gb in zip(grid, grid[1:], gaps, gaps[1:]):
                if ga == 0 or ga * gb < 0:
                    t = a if ga == 0 else brentq(lambda x: ci(x)[0] - stats["ci-low"], a, b, xtol=1e-14)
                    if abs(ci(t)[1] - stats["ci-high"]) < 1e-9:
                        return [t, total - t]
    return []


def recovered(claims: list[float], values: np.ndarray) -> list[float]:
    """Claims that are a case's value (to 1e-9 of its scale)."""
    return [c for c in claims if np.any(np.abs(values - c) <= 1e-9 * max(1.0, abs(c)))]


def known_seeds(validation: dict) -> list[int]:
    """Seeds the coordinator knows: its run seed, and any seed the site sent."""
    sent = validation.get("bootstrap-seed")
    return [RUN_SEED] + ([sent] if isinstance(sent, int) and not isinstance(sent, bool) else [])


def test_the_attack_recovers_every_value_from_what_a_site_used_to_send():
    """Control: the reconstruction works, so its failing below is the policy's doing."""
    values = np.array([c.metrics["dice-wt"] for c in synthetic_results(5, seed=1)])
    stats = naive_release(values, RUN_SEED)
    claims = order_statistic_claims(stats, 5) + replay_extremes(stats, 5, [RUN_SEED])
    assert sorted(recovered(claims, values)) == pytest.approx(sorted(values), abs=1e-9)
    assert len(claims) == 5
    for n in (9, 13, 17):  # numpy's quartiles are single cases whenever (n − 1)/4 is whole
        values = np.array([c.metrics["hd95-et"] for c in synthetic_results(n, seed=n)])
        assert len(recovered(order_statistic_claims(naive_release(values, RUN_SEED), n), values)) == 3


@pytest.mark.parametrize("rounded", [True, False], ids=["released", "without-rounding"])
def test_a_reconstruction_from_one_reply_recovers_no_case_value(rounded, monkeypatch):
    """For n = 5 … 30 the coordinator gets mean and CI (and Harrell-Davis quartiles from 10 cases on) of every
    metric and region: neither the order-statistic reading nor the bootstrap replay gives a case's value.
    Without rounding too: the structure of the release, not the rounding, is what protects."""
    if not rounded:
        monkeypatch.setattr(disclosure_policy, "RELEASE_DECIMALS", dict.fromkeys(METRICS, 17))
    settings = SiteRunSettings.from_run_config({"eval-regions": "brats", "seed": RUN_SEED})
    policy = ValidationPolicy.for_site(settings, {"data-path": "/data", "work-path": "/work"})
    secret_seed = disclosure_policy.keyed_seed(b"\x07" * 32, "bootstrap")
    for n in range(5, 31):
        results = synthetic_results(n, seed=100 + n)
        reply = evaluation_content(results, n_skipped=0, policy=policy, bootstrap_seed=secret_seed)
        validation, (metrics,) = dict(reply["validation"]), reply.metric_records.values()
        assert metrics["num-examples"] == n
        for metric, region in itertools.product(METRICS, REGIONS):
            key = f"{metric}-{region}"
            values = np.array([r.metrics[key] for r in results])
            stats = {
                s: metrics[f"{key}-{s}"]
                for s in ("mean", "median", "q1", "q3", "ci-low", "ci-high")
                if f"{key}-{s}" in metrics
            }
            assert ("median" in stats) == (n >= 10), (n, key)
            claims = order_statistic_claims(stats, n) + replay_extremes(stats, n, known_seeds(validation))
            claims += list(stats.values())  # and any released number taken as a case value
            assert recovered(claims, values) == [], (n, key)


# (b), (c), (d): replies of the site's ClientApp over several runs at one site


@dataclass
class Exchange:
    """What the coordinator sent and got back, in order, at one site (one work folder)."""

    data: Path
    work: Path
    node: dict
    replies: dict[str, Message] = field(default_factory=dict)


@pytest.fixture(scope="module")
def hospital(tmp_path_factory) -> Exchange:
    """A 10-case hospital that keeps half for validation (5 cases, its minimum), met by several runs."""
    root = tmp_path_factory.mktemp("hospital")
    data, work = root / "data", root / "work"
    add_nifti_cases(data, 0, 10, spacing_mm=4.0)
    fix_site_secret(work, 4)  # with it, 2 of the 3 cases added below go to validation
    site = Exchange(data, work, deployed(data, work, **{"validation-fraction": 0.5}))
    run_a = {**RUN_CONFIG, "val-fraction": 0.2, "seed": 0}
    run_b = {**RUN_CONFIG, "val-fraction": 0.99, "seed": 7}
    site.replies["describe"] = send("query.describe", site.node, run_a)
    site.replies["A evaluate r0"] = send("evaluate", site.node, run_a)
    site.replies["A train r1"] = send("train", site.node, run_a, server_round=1)
    site.replies["B evaluate r0"] = send("evaluate", site.node, run_b)
    site.replies["B train r1"] = send("train", site.node, run_b, server_round=1)
    # The export grows by 3 cases (the site re-runs `oncofed site check`, i.e. rebuilds its inventory)
    add_nifti_cases(data, 10, 3, spacing_mm=4.0)
    (work / "inventory.json").unlink()
    site.replies["C evaluate r0"] = send(
        "evaluate", site.node, {**RUN_CONFIG, "val-fraction": 0.3, "seed": 3}
    )
    # One case of the reported set can no longer be read
    lost = json.loads((work / "validation" / "released.json").read_text())["validation"][0]
    image = data / "imagesTr" / f"{lost}.nii.gz"
    image.write_bytes(image.read_bytes()[:100])
    site.replies["D evaluate r0"] = send(
        "evaluate", site.node, {**RUN_CONFIG, "val-fraction": 0.23, "seed": 9}
    )
    return site


def test_other_val_fraction_and_seed_do_not_change_the_validation_cases(hospital):
    """(b) Same set, same model: identical replies, so n_B·mean_B − n_A·mean_A is 0 for every metric."""
    a, b = (metrics_of(hospital.replies[f"{run} evaluate r0"]) for run in "AB")
    assert a["num-examples"] == b["num-examples"] == 5
    assert a == b
    _, records = per_case_values(hospital.work)
    assert len(records) == 15 and len({r["case_id"] for r in records}) == 5  # A, B and C: the same 5 cases
    validation = hospital.replies["B evaluate r0"].content.config_records["validation"]
    assert "no run setting chooses it and the run's seed is not used" in validation["validation-set"]
    log = (hospital.work / "logs" / "site.log").read_text()
    assert "the run's seed (7) is not used to choose validation cases" in log


def test_cases_added_in_between_are_held_back_until_k_have_accumulated(hospital):
    """(b) After 3 new cases (fewer than k = 5), the site reports the set it reported before."""
    split = json.loads((hospital.work / "validation" / "split.json").read_text())["cases"]
    new_in_validation = [
        c for c in ("hospital-a-011", "hospital-a-012", "hospital-a-013") if split[c] == "validation"
    ]
    assert 0 < len(new_in_validation) < 5  # the fixed secret sends some new cases to validation
    a, c = metrics_of(hospital.replies["A evaluate r0"]), metrics_of(hospital.replies["C evaluate r0"])
    assert c == a  # the differencing n_C·mean_C − n_A·mean_A is 0: no new case's value
    assert "added since the last released validation set" in (hospital.work / "logs" / "site.log").read_text()


def test_a_lost_case_suppresses_the_report_instead_of_revealing_it_by_difference(hospital):
    """(b) With one case of the reported set gone, n − 1 cases would give that case's values: nothing is sent."""
    reply = hospital.replies["D evaluate r0"]
    validation = reply.content.config_records["validation"]
    assert not reply.content.metric_records and validation["status"] == "suppressed"
    # 1 case lost and the 2 new ones: 3 changes, fewer than k, and the reported set is incomplete
    assert validation["reason"] == (
        "the validation cases differ from the set last released by fewer than 5 cases, and the last set is not"
        " available"
    )


def test_a_site_trains_on_its_own_training_cases_whatever_the_val_fraction(hospital):
    """(c) val-fraction 0.99 would leave one training case; the site trains on its own 5."""
    for run in "AB":
        reply = hospital.replies[f"{run} train r1"]
        assert metrics_of_train(reply)["num-examples"] == 5 and reply.content.array_records


def metrics_of_train(reply: Message) -> dict:
    (metrics,) = reply.content.metric_records.values()
    return dict(metrics)


def test_below_min_train_cases_a_site_declines_and_sends_no_weights(tmp_path):
    """(c) 6 cases, 20 % kept for validation: 5 training cases train; 4 do not, whatever the run config says."""
    data, work = tmp_path / "data", tmp_path / "work"
    add_nifti_cases(data, 0, 5, spacing_mm=4.0)
    fix_site_secret(work, 3)
    reply = send("train", deployed(data, work), {**RUN_CONFIG, "val-fraction": 0.0001}, server_round=1)
    assert not reply.content.array_records and not reply.content.metric_records
    training = reply.content.config_records["training"]
    assert (training["status"], training["reason"], training["min-train-cases"]) == ("declined", "n < 5", 5)
    assert "training declined: n < 5" in (work / "logs" / "site.log").read_text()
    assert not (work / "cache").exists()  # declined before any case was preprocessed


def test_no_number_in_any_reply_is_a_case_value(hospital):
    """(d) Over every reply of every run: no number equals a value in the site's per-case records."""
    own, records = per_case_values(hospital.work)
    assert len(own) > 50 and len({r["round"] for r in records}) == 1  # really collected
    sent = {name: numbers_in(reply) for name, reply in hospital.replies.items()}
    assert all(sent.values())
    assert [(name, v) for name, values in sent.items() for v in values if v in own] == []


def test_the_site_secret_is_kept_private_and_never_sent(hospital):
    path = hospital.work / SECRET_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    secret = path.read_text().strip()
    for name, reply in hospital.replies.items():
        raw = message_to_proto(reply).SerializeToString()
        assert secret.encode() not in raw and bytes.fromhex(secret) not in raw, name


def test_the_data_description_sends_counts_only(hospital):
    """Counts 0 or at least k, no spacing or size range (single cases' values)."""
    (overview,) = hospital.replies["describe"].content.metric_records.values()
    assert dict(overview) == {"n-cases-usable": 10, "n-cases-excluded": 0}


# Site limits: the coordinator's settings are checked before anything is loaded

OUT_OF_RANGE = [
    ("spacing-mm", 0.1, "spacing-mm = 0.1 is outside this site's limits: limits.spacing-mm-min = 0.8"),
    ("spacing-mm", 20.0, "spacing-mm = 20 is outside this site's limits: limits.spacing-mm-max = 8"),
    ("patch-size", 512, "patch-size = 512 is above this site's limit limits.patch-size-max = 160"),
    (
        "samples-per-case",
        400,
        "samples-per-case = 400 is above this site's limit limits.samples-per-case-max = 16",
    ),
    ("batch-size", 64, "batch-size = 64 is above this site's limit limits.batch-size-max = 16"),
    ("local-epochs", 500, "local-epochs = 500 is above this site's limit limits.local-epochs-max = 20"),
    (
        "personalize-epochs",
        50,
        "personalize-epochs = 50 is above this site's limit limits.personalize-epochs-max = 20",
    ),
    ("spacing-mm", 0.9, "above the site's limit limits.max-resampled-voxels = 1,000"),
]


@pytest.fixture(scope="module")
def small_site(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("limits")
    add_nifti_cases(root / "data", 0, 6, spacing_mm=4.0)
    return root / "data", root / "work"


@pytest.mark.parametrize("kind", ["train", "evaluate"])
@pytest.mark.parametrize(
    ("key", "value", "message"), OUT_OF_RANGE, ids=[f"{k}={v}" for k, v, _ in OUT_OF_RANGE]
)
def test_a_run_outside_the_sites_limits_is_refused_and_caches_nothing(small_site, kind, key, value, message):
    data, work = small_site
    node = deployed(data, work)
    if "max-resampled-voxels" in message:
        node["limits.max-resampled-voxels"] = 1000  # a site with little memory: 0.9 mm would exceed it
    reply = send(kind, node, {**RUN_CONFIG, key: value}, server_round=1)
    record = reply.content.config_records["training" if kind == "train" else "validation"]
    assert record["status"] == "refused" and message in record["reason"], record["reason"]
    assert not reply.content.metric_records and not reply.content.array_records
    assert message in (work / "logs" / "site.log").read_text()
    assert not (work / "cache").exists() or not any((work / "cache").iterdir())


def test_a_site_with_wider_limits_accepts_the_same_setting():
    settings = SiteRunSettings.from_run_config({**RUN_CONFIG, "local-epochs": 21})
    with pytest.raises(OutsideSiteLimits, match="local-epochs-max = 20"):
        check_run_settings(settings, SiteLimits.from_node_config(TINY_SITE_LIMITS))
    check_run_settings(
        settings, SiteLimits.from_node_config({**TINY_SITE_LIMITS, "limits.local-epochs-max": 30})
    )


def test_a_limit_that_is_not_a_positive_number_is_a_clear_error(small_site, tmp_path):
    data, _ = small_site
    node = deployed(data, tmp_path / "work", **{"limits.batch-size-max": "big"})
    content = RecordDict(
        {"arrays": to_record(build_model("tiny")), "config": ConfigRecord({"server-round": 1})}
    )
    context = Context(run_id=1, node_id=2, node_config=node, state=RecordDict(), run_config=RUN_CONFIG)
    reply = app(Message(content, dst_node_id=2, message_type="train"), context)
    assert reply.has_error()  # the site's own configuration is wrong: the site log names it
    assert (
        "limits.batch-size-max` must be a positive number"
        in (tmp_path / "work" / "logs" / "site.log").read_text()
    )
