"""The UsageService servicer: the live usage stream, Prometheus metrics and dashboard figures over gRPC.

The usage stream and the dashboard name tenants, token ids and spend, so they need the master key, as admin calls
do. The metrics are aggregates by model and provider, the figures `GET /metrics` serves, and need nothing."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import grpc
from google.protobuf import timestamp_pb2

from chittycan.usage_watch import LIVE_METADATA
from chittycan.v1 import observability_pb2, observability_pb2_grpc, usage_pb2
from engine import errors
from engine.admin import check_master_key
from engine.budgets import month_of
from engine.dashboard import dashboard_from_records
from engine.errors import GatewayError
from engine.ledger import UsageLedger
from engine.metrics import CONTENT_TYPE, LedgerMetrics
from engine.service import abort, internal_error

DEFAULT_WINDOW_NS = 24 * 3600 * 10**9


class UsageServicer(observability_pb2_grpc.UsageServiceServicer):
    """chittycan.v1.UsageService over the ledger and its metrics."""

    def __init__(
        self,
        ledger: UsageLedger,
        metrics: LedgerMetrics,
        master_key: str,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._ledger = ledger
        self._metrics = metrics
        self._key = master_key.encode()
        self._clock_ns = clock_ns

    async def WatchUsage(
        self,
        request: observability_pb2.WatchUsageRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> AsyncIterator[observability_pb2.WatchUsageResponse]:
        try:
            check_master_key(context, self._key, "Usage records")
        except GatewayError as err:
            await abort(context, err)
        after = self._ledger.newest_sequence()
        await context.send_initial_metadata(
            (LIVE_METADATA,)
        )  # the subscription is live: what is written from now on follows
        async for record in self._ledger.follow(after):
            if _matches(record, request):
                yield observability_pb2.WatchUsageResponse(record=record)

    async def GetMetrics(
        self,
        request: observability_pb2.GetMetricsRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> observability_pb2.GetMetricsResponse:
        try:
            await self._ledger.flush()  # read this process's own records, however recent
            text = await self._metrics.exposition()
        except Exception:  # noqa: BLE001 - a bug must still end as a clean INTERNAL status
            await abort(context, internal_error("metrics"))
        return observability_pb2.GetMetricsResponse(text=text.decode(), content_type=CONTENT_TYPE)

    async def GetDashboard(
        self,
        request: observability_pb2.GetDashboardRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> observability_pb2.GetDashboardResponse:
        until_ns = request.until.ToNanoseconds() if request.HasField("until") else self._clock_ns()
        since_ns = request.since.ToNanoseconds() if request.HasField("since") else until_ns - DEFAULT_WINDOW_NS
        try:
            check_master_key(context, self._key, "Dashboards")
            if since_ns >= until_ns:
                raise GatewayError(
                    grpc.StatusCode.INVALID_ARGUMENT, errors.INVALID_REQUEST, "`since` must be before `until`."
                )
            await self._ledger.flush()
            figures = await asyncio.to_thread(
                lambda: dashboard_from_records(
                    self._ledger.read(since_ns, until_ns), _timestamp(since_ns), _timestamp(until_ns)
                )
            )
            figures.month_saved_micros = await self._metrics.month_saved_micros(month_of(until_ns / 1e9))
        except GatewayError as err:
            await abort(context, err)
        except Exception:  # noqa: BLE001 - a bug must still end as a clean INTERNAL status
            await abort(context, internal_error("dashboard"))
        return observability_pb2.GetDashboardResponse(dashboard=figures)


def _matches(record: usage_pb2.UsageRecord, request: observability_pb2.WatchUsageRequest) -> bool:
    if request.tenant and record.tenant != request.tenant:
        return False
    return not request.model or request.model in (record.requested_model, record.routed_model)


def _timestamp(nanos: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(nanos)
    return stamp
