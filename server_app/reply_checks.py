"""What a site's reply must look like before it may touch the global model or the pooled results.

Every check returns the reason a reply is unusable (a sentence naming the record, array or key) or None. The
coordinator drops a failing reply, names the site and the reason, and goes on: nothing a site sends can end the
run or weigh more than the cases it said it has.

The record names below are those site_app sends (site_app/app.py, site_app/disclosure.py); with the wire
module of issue 14 (models/wire.py) both sides import them from there.
"""

import math
from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

ARRAYS_RECORD = "arrays"
"""Train reply: the site's weights (ArrayRecord)."""
METRICS_RECORD = "metrics"
"""Train reply: loss and `num-examples`; evaluate reply: the validation aggregates (MetricRecord)."""
VALIDATION_RECORD = "validation"
"""Evaluate reply: status ("reported" or "suppressed"), the site's minimum, the metric conventions (ConfigRecord)."""
WEIGHT_KEY = "num-examples"
"""Training or validation cases behind a reply; FedAvg weighs by it."""
USABLE_CASES_KEY = "n-cases-usable"
"""In the overview a site sends when described (data_prep.inventory.site_aggregate): its usable cases."""
REPORTED, SUPPRESSED = "reported", "suppressed"


@dataclass(frozen=True)
class ArraySpec:
    dtype: str
    shape: tuple[int, ...]


def model_spec(arrays: ArrayRecord) -> dict[str, ArraySpec]:
    """Name → dtype and shape of every array of the global model; replies must match it exactly."""
    return {name: ArraySpec(str(array.dtype), tuple(array.shape)) for name, array in arrays.items()}


def validation_status(content: RecordDict) -> str:
    """ "suppressed" or "reported" (the status of the validation record; a reply without one is "reported")."""
    record = content.config_records.get(VALIDATION_RECORD)
    return str(record.get("status", REPORTED)) if record is not None else REPORTED


def _records_problem(content: RecordDict, expected: Mapping[str, type]) -> str | None:
    if set(content.keys()) != set(expected) or any(
        not isinstance(content[name], kind) for name, kind in expected.items()
    ):
        found = ", ".join(f"{name} ({type(record).__name__})" for name, record in sorted(content.items()))
        wanted = ", ".join(f"{name} ({kind.__name__})" for name, kind in expected.items())
        return f"its records are [{found or 'none'}]; expected exactly [{wanted}]"
    return None


def _names(names: set[str]) -> str:
    shown = sorted(names)[:3]
    return ", ".join(repr(n) for n in shown) + ("…" if len(names) > 3 else "")


def arrays_problem(arrays: ArrayRecord, spec: Mapping[str, ArraySpec]) -> str | None:
    """Same array names, dtypes and shapes as the global model, and every value finite."""
    missing, unexpected = set(spec) - set(arrays.keys()), set(arrays.keys()) - set(spec)
    if missing or unexpected:
        parts = [f"lacks {len(missing)} of the global model's arrays ({_names(missing)})"] if missing else []
        parts += (
            [f"has {len(unexpected)} the global model does not ({_names(unexpected)})"] if unexpected else []
        )
        return f"its weights {' and '.join(parts)} (another model preset?)"
    for name, expected in spec.items():
        array = arrays[name]
        if str(array.dtype) != expected.dtype:
            return f"weights {name!r} are {array.dtype} instead of {expected.dtype}"
        if tuple(array.shape) != expected.shape:
            return f"weights {name!r} have shape {tuple(array.shape)} instead of {expected.shape}"
        try:
            values = array.numpy()
        except Exception as error:  # noqa: BLE001 - any undecodable payload is the site's problem, not ours
            return f"weights {name!r} cannot be read ({type(error).__name__})"
        if values.shape != expected.shape or str(values.dtype) != expected.dtype:
            return f"weights {name!r} hold {values.dtype} {values.shape}, not what their header says"
        if not np.isfinite(values).all():
            return f"weights {name!r} are not finite"
    return None


def metrics_problem(metrics: MetricRecord, max_examples: int | None) -> str | None:
    """`num-examples` a whole number from 1 to the site's usable cases; every metric finite."""
    weight = metrics.get(WEIGHT_KEY)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        return f"`{WEIGHT_KEY}` is {weight!r}; expected a whole number of cases"
    if weight != int(weight) or weight < 1:
        return f"`{WEIGHT_KEY}` is {weight!r}; expected a whole number of cases, at least 1"
    if max_examples is not None and weight > max_examples:
        return f"`{WEIGHT_KEY}` is {weight:g}, more than the {max_examples} usable cases the site described"
    for key, value in metrics.items():
        if not all(math.isfinite(v) for v in (value if isinstance(value, list) else [value])):
            return f"metric {key!r} is not finite"
    return None


def train_reply_problem(
    content: RecordDict, spec: Mapping[str, ArraySpec], max_examples: int | None
) -> str | None:
    """A train reply: exactly the site's weights and its training metrics."""
    return (
        _records_problem(content, {ARRAYS_RECORD: ArrayRecord, METRICS_RECORD: MetricRecord})
        or arrays_problem(content[ARRAYS_RECORD], spec)
        or metrics_problem(content[METRICS_RECORD], max_examples)
    )


def evaluate_reply_problem(content: RecordDict, max_examples: int | None) -> str | None:
    """An evaluate reply: the validation record, plus the aggregates unless the site suppressed them."""
    status = validation_status(content)
    if status == SUPPRESSED:
        problem = _records_problem(content, {VALIDATION_RECORD: ConfigRecord})
        if problem:
            return f"it says its validation is suppressed but {problem}"
        minimum = content[VALIDATION_RECORD].get("min-report-cases")
        if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
            return f"suppressed validation with `min-report-cases` {minimum!r}, expected a whole number of at least 1"
        return None
    if status != REPORTED:
        return f"its validation status is {status!r}; expected {REPORTED!r} or {SUPPRESSED!r}"
    return _records_problem(
        content, {VALIDATION_RECORD: ConfigRecord, METRICS_RECORD: MetricRecord}
    ) or metrics_problem(content[METRICS_RECORD], max_examples)


K = TypeVar("K", bound=Hashable)


def metric_name_outliers(contents: Mapping[K, RecordDict]) -> dict[K, str]:
    """Replies whose metric names differ from the most common set (FedAvg ends a run on a mismatch), with why.

    Ties go to the set of the first reply, so callers pass replies in a fixed order (by site name)."""
    key_sets = {
        key: frozenset(content[METRICS_RECORD].keys())
        for key, content in contents.items()
        if METRICS_RECORD in content
    }
    if not key_sets:
        return {}
    usual = Counter(key_sets.values()).most_common(1)[0][0]
    return {
        key: f"its metric names differ from the other sites' ({', '.join(sorted(keys ^ usual)[:5])})"
        for key, keys in key_sets.items()
        if keys != usual
    }
