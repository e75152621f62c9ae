"""The federation's evaluation over the reporting sites, from their aggregates alone.

Only what can be pooled exactly: each mean (models.shared.wire.is_pooled_mean) weighted by the site's number of cases
(which is the mean over all their cases), and each count (models.shared.wire.is_count) summed. Medians, quartiles, CIs
and ranges cannot be pooled from aggregates and are left out rather than approximated. Which key is which comes
from the wire contract's key grammar, so a metric or count the sites add is pooled without a change here.
"""

from collections.abc import Mapping, Sequence

from flwr.app import MetricRecord, RecordDict

from models.shared.wire import is_count, is_pooled_mean


def pool(site_metrics: Sequence[Mapping[str, float]], n_cases: Sequence[float]) -> dict[str, float | int]:
    """Case-weighted means of the means and sums of the counts, over sites with the same keys."""
    total = float(sum(n_cases))
    pooled: dict[str, float | int] = {}
    for key in site_metrics[0]:
        if is_pooled_mean(key):
            pooled[key] = (
                sum(float(m[key]) * float(n) for m, n in zip(site_metrics, n_cases, strict=True)) / total
            )
        elif is_count(key):
            pooled[key] = int(sum(m[key] for m in site_metrics))
    return pooled


def pooled_metrics(replies: list[RecordDict], weight_key: str) -> MetricRecord:
    """FedAvg's `evaluate_metrics_aggr_fn`: replies each hold exactly one MetricRecord with `weight_key`."""
    records = [next(iter(reply.metric_records.values())) for reply in replies]
    metrics = [{k: v for k, v in record.items() if k != weight_key} for record in records]
    return MetricRecord(pool(metrics, [float(record[weight_key]) for record in records]))
