"""A site's reply is checked against the global model and what the site described before it may count: each
check names the record, array or key at fault; a sound reply passes."""

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from models.presets import build_model
from models.shared.wire import OutsideLimit
from models.transport import encode
from models.weights import to_record
from server_app.rounds.reply_checks import (
    evaluate_reply_problem,
    in_transport_dtype,
    metric_name_outliers,
    model_spec,
    train_reply_problem,
)
from site_app.disclosure.policy import DisclosurePolicy
from site_app.disclosure.refusals import declined_training, refused_evaluation, refused_training
from site_app.settings.limits import OutsideSiteLimits

GLOBAL = to_record(build_model("tiny", seed=0))
SPEC = model_spec(GLOBAL)
FIRST = next(iter(SPEC))


def train_reply(arrays: ArrayRecord = GLOBAL, n: float = 8, **records) -> RecordDict:
    content = {"arrays": arrays, "metrics": MetricRecord({"train-loss": 0.4, "num-examples": n})}
    return RecordDict({**content, **records})


def with_array(name: str, value: np.ndarray) -> ArrayRecord:
    return ArrayRecord({k: (Array(value) if k == name else a) for k, a in GLOBAL.items()})


def test_a_sound_train_reply_passes():
    assert train_reply_problem(train_reply(), SPEC, max_examples=10) is None


def test_a_wrong_shape_is_named():
    problem = train_reply_problem(train_reply(with_array(FIRST, np.zeros((3, 3), np.float32))), SPEC, 10)
    assert problem == f"weights {FIRST!r} have shape (3, 3) instead of {SPEC[FIRST].shape}"


def test_float64_weights_are_refused():
    model = build_model("tiny", seed=1).double()
    problem = train_reply_problem(train_reply(to_record(model)), SPEC, 10)
    assert problem == f"weights {FIRST!r} are float64 instead of float32"


def test_renamed_records_are_refused():
    content = RecordDict({"weights": GLOBAL, "metrics": MetricRecord({"num-examples": 3})})
    problem = train_reply_problem(content, SPEC, 10)
    assert "weights (ArrayRecord)" in problem and "expected exactly [arrays (ArrayRecord), metrics" in problem
    assert "[arrays (ArrayRecord), extra (ConfigRecord), metrics (MetricRecord)]" in train_reply_problem(
        train_reply(extra=ConfigRecord({"a": 1})), SPEC, 10
    )


def test_num_examples_above_the_described_cases_is_refused():
    assert train_reply_problem(train_reply(n=1e12), SPEC, max_examples=10) == (
        "`num-examples` is 1e+12, more than the 10 usable cases the site described"
    )
    assert "at least 1" in train_reply_problem(train_reply(n=0), SPEC, 10)
    assert "whole number" in train_reply_problem(train_reply(n=2.5), SPEC, 10)


def test_missing_and_unexpected_arrays_are_named():
    renamed = ArrayRecord({("x." + k if k == FIRST else k): a for k, a in GLOBAL.items()})
    problem = train_reply_problem(train_reply(renamed), SPEC, 10)
    assert f"lacks 1 of the global model's arrays ({FIRST!r})" in problem and f"'x.{FIRST}'" in problem


def test_non_finite_weights_are_refused():
    value = GLOBAL[FIRST].numpy().copy()
    value.flat[0] = np.nan
    assert (
        train_reply_problem(train_reply(with_array(FIRST, value)), SPEC, 10)
        == f"weights {FIRST!r} are not finite"
    )


def test_an_array_whose_header_lies_is_refused():
    honest = Array(np.zeros(SPEC[FIRST].shape, np.float32))
    forged = Array(dtype="float32", shape=SPEC[FIRST].shape, stype=honest.stype, data=honest.data[:-8])
    arrays = ArrayRecord({k: (forged if k == FIRST else a) for k, a in GLOBAL.items()})
    assert "cannot be read" in train_reply_problem(train_reply(arrays), SPEC, 10)


def validation(status: str = "reported", **extra) -> ConfigRecord:
    return ConfigRecord({"status": status, "min-report-cases": 5, **extra})


def test_evaluate_replies():
    metrics = MetricRecord({"dice-mean": 0.7, "num-examples": 4})
    assert evaluate_reply_problem(RecordDict({"validation": validation(), "metrics": metrics}), 10) is None
    assert evaluate_reply_problem(RecordDict({"validation": validation("suppressed")}), 10) is None
    assert "more than the 3 usable cases" in evaluate_reply_problem(
        RecordDict({"validation": validation(), "metrics": metrics}), 3
    )
    leaky = RecordDict({"validation": validation("suppressed"), "metrics": metrics})
    assert evaluate_reply_problem(leaky, 10).startswith(
        "it says its validation is suppressed but its records are"
    )
    assert "expected exactly [validation (ConfigRecord), metrics (MetricRecord)]" in evaluate_reply_problem(
        RecordDict({"validation": validation(), "results": metrics}), 10
    )
    assert "status is 'maybe'" in evaluate_reply_problem(RecordDict({"validation": validation("maybe")}), 10)
    assert "not finite" in evaluate_reply_problem(
        RecordDict(
            {
                "validation": validation(),
                "metrics": MetricRecord({"dice-mean": float("nan"), "num-examples": 2}),
            }
        ),
        10,
    )


def test_metric_names_that_differ_from_the_others_are_named():
    same = MetricRecord({"train-loss": 0.1, "num-examples": 2})
    other = MetricRecord({"train-loss": 0.1, "num-examples": 2, "sneaky": 1.0})
    contents = {
        "a": RecordDict({"metrics": same}),
        "b": RecordDict({"metrics": same}),
        "c": RecordDict({"metrics": other}),
    }
    assert metric_name_outliers(contents) == {"c": "its metric names differ from the other sites' (sneaky)"}


def test_any_other_dtype_is_refused():
    half = to_record(build_model("tiny", seed=1).half())
    assert (
        train_reply_problem(train_reply(half), SPEC, 10)
        == f"weights {FIRST!r} are float16 instead of float32"
    )
    ints = with_array(FIRST, np.zeros(SPEC[FIRST].shape, np.int32))
    assert (
        train_reply_problem(train_reply(ints), SPEC, 10) == f"weights {FIRST!r} are int32 instead of float32"
    )


def refusal(setting: str, value: float, limit: str, bound: float) -> OutsideSiteLimits:
    return OutsideSiteLimits(f"{setting} outside limits", OutsideLimit(setting, value, limit, bound))


def test_a_sites_policy_replies_are_sound_with_exactly_their_records():
    policy = DisclosurePolicy.from_node_config({})
    assert train_reply_problem(declined_training("n < 5", policy), SPEC, 10) is None
    spacing = refusal("spacing-mm", 0.1, "limits.spacing-mm-min", 0.8)
    assert train_reply_problem(refused_training(spacing), SPEC, 10) is None
    patch = refusal("patch-size", 512, "limits.patch-size-max", 160)
    assert evaluate_reply_problem(refused_evaluation(patch), 10) is None
    smuggled = declined_training("n < 5", policy)
    smuggled["metrics"] = MetricRecord({"train-loss": 0.3})
    assert train_reply_problem(smuggled, SPEC, 10).startswith("it says it declined to train but its records")
    leaky = refused_evaluation(patch)
    leaky["metrics"] = MetricRecord({"dice-mean": 0.7, "num-examples": 4})
    assert evaluate_reply_problem(leaky, 10).startswith("it says its validation is refused but its records")
    assert "expected one of reported, suppressed, refused" in evaluate_reply_problem(
        RecordDict({"validation": validation("partial")}), 10
    )


def test_statistics_a_sites_policy_may_withhold_do_not_make_its_reply_differ():
    full = MetricRecord({"dice-wt-mean": 0.5, "dice-wt-median": 0.5, "n-skipped": 0, "num-examples": 12})
    small = MetricRecord({"dice-wt-mean": 0.5, "num-examples": 2})
    odd = MetricRecord({"dice-wt-mean": 0.5, "dice-xx-mean": 0.3, "num-examples": 2})
    contents = {name: RecordDict({"metrics": m}) for name, m in (("a", full), ("b", small), ("c", odd))}
    assert metric_name_outliers(contents) == {
        "c": "its metric names differ from the other sites' (dice-xx-mean)"
    }


def test_float16_replies_pass_only_against_the_spec_in_the_transport_dtype():
    sent = in_transport_dtype(SPEC, "float16")
    assert {s.dtype for s in sent.values()} <= {"float16", "int64"}
    assert {name: s.shape for name, s in sent.items()} == {name: s.shape for name, s in SPEC.items()}
    half = encode(GLOBAL, "float16")
    assert train_reply_problem(train_reply(half), sent, 10) is None
    assert (
        train_reply_problem(train_reply(half), SPEC, 10)
        == f"weights {FIRST!r} are float16 instead of float32"
    )
    assert train_reply_problem(train_reply(), sent, 10) == f"weights {FIRST!r} are float32 instead of float16"
    assert in_transport_dtype(SPEC, "float32") == SPEC
