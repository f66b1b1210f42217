"""The dashboard figures of a time window, from its usage records; latency percentiles are exact (nearest rank
over every answered request of the window), not estimated from histogram buckets."""

from array import array
from collections import Counter
from collections.abc import Iterable, Sequence

from google.protobuf import duration_pb2, timestamp_pb2

from chittycan.v1 import observability_pb2, usage_pb2

PERCENTILES = (50, 95, 99)
_UNCACHED = frozenset({usage_pb2.CACHE_STATUS_MISS, usage_pb2.CACHE_STATUS_BYPASS})


def nearest_rank(ordered: Sequence[int], percent: int) -> int:
    """The smallest value with at least `percent`% of the values at or below it (0 for no values)."""
    if not ordered:
        return 0
    rank = -(-percent * len(ordered) // 100)  # ceil(percent / 100 * n), in integers
    return ordered[max(rank, 1) - 1]


def dashboard_from_records(
    records: Iterable[usage_pb2.UsageRecord],
    since: timestamp_pb2.Timestamp,
    until: timestamp_pb2.Timestamp,
) -> observability_pb2.Dashboard:
    """Figures of `records` (the caller reads the window [since, until) from the ledger).

    `month_saved_micros` is left for the caller, who has the whole month's figure.
    """
    figures = observability_pb2.Dashboard(since=since, until=until)
    latencies = array("q")
    models: Counter[str] = Counter()
    for record in records:
        figures.requests += 1
        figures.cost_micros += record.cost_micros
        figures.prompt_tokens += record.prompt_tokens
        figures.completion_tokens += record.completion_tokens
        models[record.requested_model] += 1
        if record.cache == usage_pb2.CACHE_STATUS_HIT:
            figures.cache_hits += 1
            figures.cached_cost_micros += record.cost_micros
            figures.saved_micros += record.saved_micros
        elif record.cache in _UNCACHED:
            figures.uncached_requests += 1
            figures.uncached_cost_micros += record.cost_micros
        if record.http_status >= 400:
            figures.errors += 1
        else:
            latencies.append(record.latency_micros)
    ordered = sorted(latencies)
    p50, p95, p99 = (_duration(nearest_rank(ordered, p)) for p in PERCENTILES)
    figures.latency.CopyFrom(observability_pb2.LatencyPercentiles(p50=p50, p95=p95, p99=p99, samples=len(ordered)))
    for model, count in sorted(models.items(), key=lambda item: (-item[1], item[0])):
        figures.models.add(model=model, requests=count)
    return figures


def _duration(micros: int) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMicroseconds(micros)
    return duration
