"""What a site's reply must look like before it may touch the global model or the pooled results.

Every check returns the reason a reply is unusable (a sentence naming the record, array or key) or None. The
coordinator drops a failing reply, names the site and the reason, and goes on: nothing a site sends can end the
run or weigh more than the cases it said it has. Record names, keys and statuses are models.shared.wire's, the ones the
site's ClientApp sends. A reply in which the site's own policy stops a phase (a train reply DECLINED or REFUSED, an
evaluate reply SUPPRESSED or REFUSED: site_app.disclosure.policy, site_app.settings.limits) is sound when it has
exactly the records that status carries (a REFUSED one also names the setting and limit, typed); it is filed with
the site's reason, not dropped.
"""

import math
from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from models.shared.wire import (
    EVALUATE_STATUSES,
    NUM_EXAMPLES,
    TRAINING_STATUSES,
    WITHOUT_NUMBERS,
    OutsideLimit,
    Record,
    Status,
    Training,
    Validation,
    read_status,
    withholdable,
)


@dataclass(frozen=True)
class ArraySpec:
    dtype: str
    shape: tuple[int, ...]


def model_spec(arrays: ArrayRecord) -> dict[str, ArraySpec]:
    """Name → dtype and shape of every array of the global model; replies must match it exactly."""
    return {name: ArraySpec(str(array.dtype), tuple(array.shape)) for name, array in arrays.items()}


def in_transport_dtype(spec: dict[str, ArraySpec], transport_dtype: str) -> dict[str, ArraySpec]:
    """The spec of the weights as they travel (models.transport.encode): float arrays in `transport_dtype`
    (run config `transport-dtype`), the others unchanged. A float16 run's training replies hold float16."""
    return {
        name: ArraySpec(transport_dtype, expected.shape) if np.dtype(expected.dtype).kind == "f" else expected
        for name, expected in spec.items()
    }


def validation_status(content: RecordDict) -> Status | None:
    """The status of an evaluate reply's VALIDATION record (models.shared.wire.EVALUATE_STATUSES; a reply without
    the record, or without a status in it, is reported); None for a status an evaluate reply cannot have."""
    record = content.config_records.get(Record.VALIDATION)
    status = record.get(Validation.STATUS, Status.REPORTED) if record is not None else Status.REPORTED
    return read_status(status, EVALUATE_STATUSES)


def training_status(content: RecordDict) -> Status | None:
    """The status of a train reply the site's policy stopped (models.shared.wire.TRAINING_STATUSES: a TRAINING
    record and no weights), else None."""
    if content.array_records:
        return None
    record = content.config_records.get(Record.TRAINING)
    return read_status(record.get(Training.STATUS), TRAINING_STATUSES) if record is not None else None


def refusal_problem(record: ConfigRecord) -> str | None:
    """A REFUSED reply names the run setting and the site's limit it breaks (models.shared.wire.OutsideLimit)."""
    if OutsideLimit.from_record(record) is None:
        return f"it says it refused but does not name the setting and limit ({', '.join(OutsideLimit.KEYS)})"
    return None


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
    """`num-examples` a whole number from 1 to the most cases the site may have; every metric finite."""
    weight = metrics.get(NUM_EXAMPLES)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        return f"`{NUM_EXAMPLES}` is {weight!r}; expected a whole number of cases"
    if weight != int(weight) or weight < 1:
        return f"`{NUM_EXAMPLES}` is {weight!r}; expected a whole number of cases, at least 1"
    if max_examples is not None and weight > max_examples:
        return f"`{NUM_EXAMPLES}` is {weight:g}, more than the {max_examples} usable cases the site described"
    for key, value in metrics.items():
        if not all(math.isfinite(v) for v in (value if isinstance(value, list) else [value])):
            return f"metric {key!r} is not finite"
    return None


def train_reply_problem(
    content: RecordDict, spec: Mapping[str, ArraySpec], max_examples: int | None
) -> str | None:
    """A train reply: exactly the site's weights and its training metrics, or only the TRAINING record of a
    round the site's policy declined or refused."""
    status = training_status(content)
    if status is not None:
        problem = _records_problem(content, {Record.TRAINING: ConfigRecord})
        if problem:
            return f"it says it {status} to train but {problem}"
        return refusal_problem(content[Record.TRAINING]) if status == Status.REFUSED else None
    return (
        _records_problem(content, {Record.ARRAYS: ArrayRecord, Record.METRICS: MetricRecord})
        or arrays_problem(content[Record.ARRAYS], spec)
        or metrics_problem(content[Record.METRICS], max_examples)
    )


def evaluate_reply_problem(content: RecordDict, max_examples: int | None) -> str | None:
    """An evaluate reply: the VALIDATION record, plus the aggregates when reported (none when suppressed or
    refused)."""
    status = validation_status(content)
    if status is None:
        found = content[Record.VALIDATION].get(Validation.STATUS)
        return f"its validation status is {found!r}; expected one of {', '.join(EVALUATE_STATUSES)}"
    if status in WITHOUT_NUMBERS:
        problem = _records_problem(content, {Record.VALIDATION: ConfigRecord})
        if problem:
            return f"it says its validation is {status} but {problem}"
        if status == Status.REFUSED:  # nothing was validated, so no minimum applies
            return refusal_problem(content[Record.VALIDATION])
        minimum = content[Record.VALIDATION].get(Validation.MIN_REPORT_CASES)
        if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
            return (
                f"suppressed validation with `{Validation.MIN_REPORT_CASES}` {minimum!r}, expected a whole number"
                " of at least 1"
            )
        return None
    return _records_problem(
        content, {Record.VALIDATION: ConfigRecord, Record.METRICS: MetricRecord}
    ) or metrics_problem(content[Record.METRICS], max_examples)


K = TypeVar("K", bound=Hashable)


def metric_name_outliers(contents: Mapping[K, RecordDict]) -> dict[K, str]:
    """Replies whose metric names differ from the most common set (FedAvg ends a run on a mismatch), with why.

    Names a site's policy may withhold (models.shared.wire.withholdable: medians below its min-position-cases, …) do
    not count. Ties go to the set of the first reply, so callers pass replies in a fixed order (by site name)."""
    key_sets = {
        key: frozenset(k for k in content[Record.METRICS] if not withholdable(k))
        for key, content in contents.items()
        if Record.METRICS in content
    }
    if not key_sets:
        return {}
    usual = Counter(key_sets.values()).most_common(1)[0][0]
    return {
        key: f"its metric names differ from the other sites' ({', '.join(sorted(keys ^ usual)[:5])})"
        for key, keys in key_sets.items()
        if keys != usual
    }


def conform(arrays: ArrayRecord, spec: dict[str, ArraySpec]) -> ArrayRecord:
    """The aggregate in the global model's dtypes (FedAvg returns integer arrays as float64), in its order."""
    return ArrayRecord(
        {
            name: Array(np.asarray(arrays[name].numpy(), dtype=expected.dtype))
            for name, expected in spec.items()
        }
    )


def too_few_replies(count: int, min_sites: int) -> str:
    """Why the global model stays: fewer sound training replies than the quorum."""
    return f"{count} sound training {'reply' if count == 1 else 'replies'}, fewer than min-sites {min_sites}"
