"""Prometheus metrics aggregated from the usage ledger, incrementally: each scrape folds in only the records
written since the previous one (the ledger's write order), so counters span restarts and every engine process
sharing the store, and a scrape never rescans the whole ledger.
"""

import asyncio
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from chittycan.v1 import usage_pb2
from engine import errors
from engine.budgets import month_of
from engine.ledger import UsageLedger
from engine.telemetry import CACHE_NAMES

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
_Labels = TypeVar("_Labels", bound=tuple[str, ...])
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Failures a provider raised (RATE_LIMITED is the upstream's 429; the gateway's own refusals have other reasons).
UPSTREAM_REASONS = frozenset(
    {
        errors.UPSTREAM_AUTH,
        errors.UPSTREAM_ERROR,
        errors.UPSTREAM_UNAVAILABLE,
        errors.UPSTREAM_TIMEOUT,
        errors.RATE_LIMITED,
    }
)
# The model label is what clients asked for; past this many distinct values, new ones count as "other".
MAX_MODEL_LABELS = 200
OTHER_MODEL = "other"


class _Histogram:
    """Per-bucket counts (not cumulative; the last is +Inf) and the sum of a label set's observations."""

    __slots__ = ("counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, bounds: tuple[float, ...], value: float) -> None:
        self.counts[bisect_left(bounds, value)] += 1
        self.total += value

    def buckets(self, bounds: tuple[float, ...]) -> list[tuple[str, float]]:
        cumulative, out = 0, []
        for bound, count in zip((*map(str, bounds), "+Inf"), self.counts, strict=True):
            cumulative += count
            out.append((bound, float(cumulative)))
        return out


class _Totals:
    """Everything the exposition needs, keyed by label values."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, str, str]] = Counter()  # model, provider, status, cache
        self.tokens: Counter[tuple[str, str, str, str]] = Counter()  # model, provider, cache, type
        self.cost_micros: Counter[tuple[str, str]] = Counter()  # model, provider
        self.saved_micros: Counter[tuple[str, str]] = Counter()  # model, provider
        self.failures: Counter[tuple[str, str, str]] = Counter()  # model, status, reason
        self.upstream_errors: Counter[tuple[str, str]] = Counter()  # model, reason
        self.budget_refusals: Counter[tuple[str]] = Counter()  # model
        self.unpriced: Counter[tuple[str, str]] = Counter()  # model, provider: answered, but no price known
        self.latency: dict[tuple[str, str, str], _Histogram] = {}  # model, provider, cache
        self.ttft: dict[tuple[str, str], _Histogram] = {}  # model, provider
        self.saved_by_month: Counter[str] = Counter()
        self._models: set[str] = set()

    def _model(self, name: str) -> str:
        if name in self._models:
            return name
        if len(self._models) >= MAX_MODEL_LABELS:
            return OTHER_MODEL
        self._models.add(name)
        return name

    def add(self, record: usage_pb2.UsageRecord) -> None:
        model, provider = self._model(record.requested_model), record.provider
        cache, status = CACHE_NAMES.get(record.cache, "none"), str(record.http_status)
        self.requests[(model, provider, status, cache)] += 1
        self.tokens[(model, provider, cache, "input")] += record.prompt_tokens
        self.tokens[(model, provider, cache, "output")] += record.completion_tokens
        self.cost_micros[(model, provider)] += record.cost_micros
        if record.saved_micros:
            self.saved_micros[(model, provider)] += record.saved_micros
            self.saved_by_month[month_of(record.time.seconds)] += record.saved_micros
        if record.http_status >= 400:
            self.failures[(model, status, record.error_reason)] += 1
        elif not record.cost_known:
            self.unpriced[(model, provider)] += 1
        if record.error_reason in UPSTREAM_REASONS:
            self.upstream_errors[(model, record.error_reason)] += 1
        if record.error_reason == errors.BUDGET_EXCEEDED:
            self.budget_refusals[(model,)] += 1
        latency = self.latency.setdefault((model, provider, cache), _Histogram(LATENCY_BUCKETS))
        latency.observe(LATENCY_BUCKETS, record.latency_micros / 1e6)
        if record.ttft_micros:
            ttft = self.ttft.setdefault((model, provider), _Histogram(TTFT_BUCKETS))
            ttft.observe(TTFT_BUCKETS, record.ttft_micros / 1e6)


class LedgerMetrics:
    """The ledger's Prometheus metrics plus this process's calls in flight; one per engine, built by server.py."""

    def __init__(self, ledger: UsageLedger, *, in_flight: Callable[[], int]) -> None:
        self._ledger = ledger
        self._in_flight = in_flight
        self._after: int | None = None
        self._totals = _Totals()
        self._lock = asyncio.Lock()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    async def exposition(self) -> bytes:
        """Fold in the records written since the last call (the first reads the whole ledger), then render in the
        Prometheus text format (CONTENT_TYPE)."""
        async with self._lock:
            await asyncio.to_thread(self._catch_up)
            return generate_latest(self._registry)

    async def month_saved_micros(self, month: str) -> int:
        """What cache hits saved in a UTC month (YYYY-MM), across the whole ledger."""
        async with self._lock:
            await asyncio.to_thread(self._catch_up)
            return self._totals.saved_by_month[month]

    def _catch_up(self) -> None:
        for sequence, record in self._ledger.read_written(self._after):
            self._totals.add(record)
            self._after = sequence if self._after is None else max(self._after, sequence)

    def collect(self) -> Iterator[Metric]:
        """The metric families (prometheus_client's Collector protocol; called while rendering)."""
        totals = self._totals
        yield _counter(
            "chittycan_requests",
            "Requests by model, provider, HTTP status and cache outcome.",
            ["model", "provider", "status", "cache"],
            totals.requests,
        )
        yield _counter(
            "chittycan_tokens",
            "Tokens by model, provider, cache outcome and type (input or output).",
            ["model", "provider", "cache", "type"],
            totals.tokens,
        )
        yield _counter(
            "chittycan_cost_usd",
            "Billed cost in USD by model and provider.",
            ["model", "provider"],
            totals.cost_micros,
            scale=1e-6,
        )
        yield _counter(
            "chittycan_unpriced_requests",
            "Answered requests whose model has no price (their cost is unknown, not zero).",
            ["model", "provider"],
            totals.unpriced,
        )
        yield _counter(
            "chittycan_saved_usd",
            "Cost avoided by cache hits in USD, by model and provider.",
            ["model", "provider"],
            totals.saved_micros,
            scale=1e-6,
        )
        yield _counter(
            "chittycan_request_errors",
            "Failed requests by model, HTTP status and error reason.",
            ["model", "status", "reason"],
            totals.failures,
        )
        yield _counter(
            "chittycan_upstream_errors",
            "Requests failed by an upstream, by model and error reason.",
            ["model", "reason"],
            totals.upstream_errors,
        )
        yield _counter(
            "chittycan_budget_refusals",
            "Requests refused (HTTP 429) because the tenant's budget is spent.",
            ["model"],
            totals.budget_refusals,
        )
        yield _histogram(
            "chittycan_request_duration_seconds",
            "Request latency in the engine, in seconds.",
            ["model", "provider", "cache"],
            totals.latency,
            LATENCY_BUCKETS,
        )
        yield _histogram(
            "chittycan_time_to_first_token_seconds",
            "Time to the first chunk of streams, in seconds.",
            ["model", "provider"],
            totals.ttft,
            TTFT_BUCKETS,
        )
        yield GaugeMetricFamily(
            "chittycan_requests_in_flight", "Gateway calls running in this engine process.", value=self._in_flight()
        )


def _counter(
    name: str, documentation: str, labels: list[str], values: Mapping[_Labels, int], *, scale: float = 1.0
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for label_values, value in sorted(values.items()):
        family.add_metric(list(label_values), value * scale)
    return family


def _histogram(
    name: str,
    documentation: str,
    labels: list[str],
    values: Mapping[_Labels, _Histogram],
    bounds: tuple[float, ...],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for label_values, histogram in sorted(values.items()):
        family.add_metric(list(label_values), histogram.buckets(bounds), histogram.total)
    return family
