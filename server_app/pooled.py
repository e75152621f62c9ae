"""The federation's evaluation over the reporting sites, from their aggregates alone.

Only what can be pooled exactly: each "-mean" weighted by the site's number of cases (which is the mean over all
their cases), and counts summed. Medians, quartiles, CIs and ranges cannot be pooled from aggregates and are
left out rather than approximated.
"""

from collections.abc import Mapping, Sequence

from flwr.app import MetricRecord, RecordDict

COUNT_PREFIXES = ("n-cases", "n-skipped", "empty-", "lesions-")


def pool(site_metrics: Sequence[Mapping[str, float]], n_cases: Sequence[float]) -> dict[str, float | int]:
    """Case-weighted means of the "-mean" keys and sums of the counts, over sites with the same keys."""
    total = float(sum(n_cases))
    pooled: dict[str, float | int] = {}
    for key in site_metrics[0]:
        if key.endswith("-mean"):
            pooled[key] = (
                sum(float(m[key]) * float(n) for m, n in zip(site_metrics, n_cases, strict=True)) / total
            )
        elif key.startswith(COUNT_PREFIXES):
            pooled[key] = int(sum(m[key] for m in site_metrics))
    return pooled


def pooled_metrics(replies: list[RecordDict], weight_key: str) -> MetricRecord:
    """FedAvg's `evaluate_metrics_aggr_fn`: replies each hold exactly one MetricRecord with `weight_key`."""
    records = [next(iter(reply.metric_records.values())) for reply in replies]
    metrics = [{k: v for k, v in record.items() if k != weight_key} for record in records]
    return MetricRecord(pool(metrics, [float(record[weight_key]) for record in records]))
