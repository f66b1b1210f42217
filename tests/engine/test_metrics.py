"""Ledger metrics on a real LMDB store: Prometheus exposition, incremental scrapes, and the dashboard figures."""

import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf import timestamp_pb2

from chittycan.v1 import usage_pb2
from engine import errors
from engine.dashboard import dashboard_from_records, nearest_rank
from engine.ledger import UsageLedger
from engine.metrics import MAX_MODEL_LABELS, OTHER_MODEL, LedgerMetrics
from engine.store import Store, StoreWriter
from tests.prometheus_text import Samples, parse_samples, sample_value

HIT, MISS, BYPASS = usage_pb2.CACHE_STATUS_HIT, usage_pb2.CACHE_STATUS_MISS, usage_pb2.CACHE_STATUS_BYPASS
T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z


class InFlight:
    def __init__(self) -> None:
        self.value = 0

    def __call__(self) -> int:
        return self.value


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[tuple[Store, StoreWriter]]:
    store = Store(tmp_path, map_size=64 << 20)
    writer = StoreWriter(store)
    writer.start()
    yield store, writer
    await writer.close()
    store.close()


@pytest.fixture
def ledger(store: tuple[Store, StoreWriter]) -> UsageLedger:
    return UsageLedger(*store)


def _record(n: int, *, at_ns: int | None = None, **fields: object) -> usage_pb2.UsageRecord:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(T0 + n * 10**9 if at_ns is None else at_ns)
    values: dict[str, object] = {
        "request_id": f"req_{n}",
        "requested_model": "gpt-4o",
        "provider": "openai",
        "http_status": 200,
        "cache": MISS,
        "latency_micros": 1000 * (n + 1),
    }
    values.update(fields)
    return usage_pb2.UsageRecord(time=stamp, **values)  # type: ignore[arg-type]


def _samples(text: bytes) -> Samples:
    return parse_samples(text.decode())


async def test_exposition_counts_every_kind_of_record(ledger: UsageLedger) -> None:
    in_flight = InFlight()
    metrics = LedgerMetrics(ledger, in_flight=in_flight)
    ledger.record(_record(0, prompt_tokens=10, completion_tokens=5, cost_micros=75, cost_known=True))
    ledger.record(_record(1, cache=HIT, saved_micros=75, prompt_tokens=10, completion_tokens=5))
    ledger.record(_record(2, operation=usage_pb2.OPERATION_STREAM_CHAT, cache=BYPASS, ttft_micros=30_000))
    ledger.record(_record(3, provider="", cache=0, http_status=503, error_reason=errors.UPSTREAM_UNAVAILABLE))
    ledger.record(_record(4, provider="", cache=0, http_status=429, error_reason=errors.BUDGET_EXCEEDED))
    ledger.record(_record(5, requested_model="nope", provider="", cache=0, http_status=404, error_reason="X"))
    await ledger.flush()
    in_flight.value = 3
    samples = _samples(await metrics.exposition())

    requests = "chittycan_requests_total"
    assert sample_value(samples, requests, model="gpt-4o", provider="openai", status="200", cache="miss") == 1
    assert sample_value(samples, requests, model="gpt-4o", provider="openai", status="200", cache="hit") == 1
    assert sample_value(samples, requests, model="gpt-4o", provider="openai", status="200", cache="bypass") == 1
    assert sample_value(samples, requests, model="gpt-4o", provider="", status="503", cache="none") == 1
    assert sample_value(samples, requests, model="nope", provider="", status="404", cache="none") == 1
    tokens = "chittycan_tokens_total"
    assert sample_value(samples, tokens, model="gpt-4o", provider="openai", cache="miss", type="input") == 10
    assert sample_value(samples, tokens, model="gpt-4o", provider="openai", cache="hit", type="output") == 5
    assert sample_value(samples, "chittycan_cost_usd_total", model="gpt-4o", provider="openai") == pytest.approx(75e-6)
    assert sample_value(samples, "chittycan_saved_usd_total", model="gpt-4o", provider="openai") == pytest.approx(75e-6)
    upstream = "chittycan_upstream_errors_total"
    assert sample_value(samples, upstream, model="gpt-4o", reason=errors.UPSTREAM_UNAVAILABLE) == 1
    assert sample_value(samples, "chittycan_budget_refusals_total", model="gpt-4o") == 1
    failures = "chittycan_request_errors_total"
    assert sample_value(samples, failures, model="gpt-4o", status="429", reason=errors.BUDGET_EXCEEDED) == 1
    assert sample_value(samples, failures, model="nope", status="404", reason="X") == 1
    duration = "chittycan_request_duration_seconds"
    miss = {"model": "gpt-4o", "provider": "openai", "cache": "miss"}
    assert sample_value(samples, f"{duration}_count", **miss) == 1
    assert sample_value(samples, f"{duration}_sum", **miss) == pytest.approx(0.001)
    assert sample_value(samples, f"{duration}_bucket", le="0.001", **miss) == 0
    assert sample_value(samples, f"{duration}_bucket", le="0.005", **miss) == 1
    ttft = "chittycan_time_to_first_token_seconds"
    assert sample_value(samples, f"{ttft}_count", model="gpt-4o", provider="openai") == 1
    assert sample_value(samples, f"{ttft}_bucket", model="gpt-4o", provider="openai", le="0.025") == 0
    assert sample_value(samples, f"{ttft}_bucket", model="gpt-4o", provider="openai", le="0.05") == 1
    assert sample_value(samples, "chittycan_requests_in_flight") == 3


async def test_scrapes_are_incremental_and_follow_write_order(ledger: UsageLedger) -> None:
    metrics = LedgerMetrics(ledger, in_flight=InFlight())
    ledger.record(_record(10))
    await ledger.flush()
    first = _samples(await metrics.exposition())
    # A long request arrived before the one already counted but is written after it, as streams are.
    ledger.record(_record(1, request_id="req_long_stream"))
    ledger.record(_record(11))
    await ledger.flush()
    second = _samples(await metrics.exposition())
    third = _samples(await metrics.exposition())
    labels = {"model": "gpt-4o", "provider": "openai", "status": "200", "cache": "miss"}
    assert sample_value(first, "chittycan_requests_total", **labels) == 1
    assert sample_value(second, "chittycan_requests_total", **labels) == 3
    assert third == second, "a scrape with nothing new changes nothing"
    assert [sequence for sequence, _ in ledger.read_written(1)] == [2, 3]


async def test_records_from_before_the_write_index_are_counted_once(
    store: tuple[Store, StoreWriter], ledger: UsageLedger
) -> None:
    legacy = _record(0, request_id="req_legacy")
    key = struct.pack(">q", legacy.time.ToNanoseconds()) + legacy.request_id.encode()
    usage_db = store[0].db("usage")
    store[0].write([lambda txn: txn.put(key, legacy.SerializeToString(), db=usage_db)])  # as written before the index
    metrics = LedgerMetrics(ledger, in_flight=InFlight())
    labels = {"model": "gpt-4o", "provider": "openai", "status": "200", "cache": "miss"}
    assert sample_value(_samples(await metrics.exposition()), "chittycan_requests_total", **labels) == 1
    ledger.record(_record(1))
    await ledger.flush()
    assert sample_value(_samples(await metrics.exposition()), "chittycan_requests_total", **labels) == 2


async def test_model_labels_are_bounded(ledger: UsageLedger) -> None:
    metrics = LedgerMetrics(ledger, in_flight=InFlight())
    for n in range(MAX_MODEL_LABELS + 5):
        ledger.record(_record(n, requested_model=f"m{n}"))
    await ledger.flush()
    samples = _samples(await metrics.exposition())
    models = {dict(labels)["model"] for name, labels in samples if name == "chittycan_requests_total"}
    assert len(models) == MAX_MODEL_LABELS + 1
    labels = {"model": OTHER_MODEL, "provider": "openai", "status": "200", "cache": "miss"}
    assert sample_value(samples, "chittycan_requests_total", **labels) == 5


async def test_month_savings_cover_the_whole_ledger(ledger: UsageLedger) -> None:
    metrics = LedgerMetrics(ledger, in_flight=InFlight())
    ledger.record(_record(0, cache=HIT, saved_micros=40))
    ledger.record(_record(1, cache=HIT, saved_micros=2))
    ledger.record(_record(2, at_ns=T0 - 10**9, cache=HIT, saved_micros=1000))  # 2025-12-31
    await ledger.flush()
    assert await metrics.month_saved_micros("2026-01") == 42
    assert await metrics.month_saved_micros("2025-12") == 1000


@pytest.mark.parametrize(
    ("values", "percent", "expected"),
    [
        ([], 50, 0),
        ([7], 99, 7),
        ([1, 2, 3, 4], 50, 2),
        ([1, 2, 3, 4], 95, 4),
        (list(range(1, 101)), 95, 95),
        (list(range(1, 101)), 99, 99),
        (list(range(1, 201)), 99, 198),
    ],
)
def test_nearest_rank(values: list[int], percent: int, expected: int) -> None:
    assert nearest_rank(values, percent) == expected


def test_dashboard_figures() -> None:
    records = [
        _record(0, cost_micros=100, cost_known=True, prompt_tokens=3, completion_tokens=4),
        _record(1, cost_micros=300, cost_known=True, cache=BYPASS, requested_model="claude-sonnet-4"),
        _record(2, cache=HIT, saved_micros=100),
        _record(3, cache=HIT, saved_micros=100),
        _record(4, cache=0, http_status=401, latency_micros=1),
    ]
    since, until = timestamp_pb2.Timestamp(seconds=1), timestamp_pb2.Timestamp(seconds=2)
    figures = dashboard_from_records(records, since, until)
    assert (figures.requests, figures.cache_hits, figures.uncached_requests, figures.errors) == (5, 2, 2, 1)
    assert (figures.cost_micros, figures.uncached_cost_micros, figures.cached_cost_micros) == (400, 400, 0)
    assert figures.saved_micros == 200
    assert (figures.prompt_tokens, figures.completion_tokens) == (3, 4)
    assert figures.latency.samples == 4, "the failed request is not in the latency figures"
    assert [figures.latency.p50.ToMicroseconds(), figures.latency.p99.ToMicroseconds()] == [2000, 4000]
    assert [(m.model, m.requests) for m in figures.models] == [("gpt-4o", 4), ("claude-sonnet-4", 1)]
    assert (figures.since, figures.until) == (since, until)
