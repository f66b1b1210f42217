"""Async client for the engine's UsageService: the live usage stream, Prometheus metrics and dashboard figures.
The usage stream and the dashboard need the engine's master key; the metrics do not."""

import asyncio
from collections.abc import AsyncIterator

import grpc
from google.protobuf import timestamp_pb2

from chittycan.usage_watch import LIVE_METADATA
from chittycan.v1 import observability_pb2, observability_pb2_grpc, usage_pb2
from clients.errors import error_from_aio
from clients.gateway import CHANNEL_OPTIONS


class UsageWatch:
    """A running WatchUsage call: iterate its records; `cancel()` ends it, and the iteration with it."""

    def __init__(self, call: grpc.aio.UnaryStreamCall) -> None:  # type: ignore[type-arg]
        self._call = call
        self._cancelled = False

    async def ready(self) -> None:
        """Wait until the subscription is live: records written from then on are delivered. Raises the call's
        error if it ended instead (e.g. refused without the master key)."""
        call = self._call
        try:
            metadata = await call.initial_metadata()
            if LIVE_METADATA in tuple(metadata or ()):
                return
            code = await call.code()  # the call ended without going live: wait for why
            if code != grpc.StatusCode.OK:
                raise grpc.aio.AioRpcError(code, metadata, await call.trailing_metadata(), await call.details())
        except grpc.aio.AioRpcError as err:
            raise error_from_aio(err) from None

    def __aiter__(self) -> AsyncIterator[usage_pb2.UsageRecord]:
        return self._records()

    async def _records(self) -> AsyncIterator[usage_pb2.UsageRecord]:
        try:
            async for response in self._call:
                yield response.record
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                raise error_from_aio(err) from None
        except asyncio.CancelledError:
            # grpc.aio raises CancelledError from a call we cancelled ourselves: that is the end of the records.
            # A cancellation of the task itself still propagates.
            task = asyncio.current_task()
            if not self._cancelled or (task is not None and task.cancelling()):
                raise

    def cancel(self) -> None:
        """End the subscription."""
        self._cancelled = True
        self._call.cancel()


class UsageClient:
    """UsageService over its own channel (`target`) or one shared with another client (`channel`); `master_key`
    for `watch` and `dashboard`."""

    def __init__(
        self, target: str | None = None, *, channel: grpc.aio.Channel | None = None, master_key: str | None = None
    ) -> None:
        if channel is None:
            if target is None:
                raise ValueError("UsageClient needs a target or a channel")
            channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
            self._owned: grpc.aio.Channel | None = channel
        else:
            self._owned = None
        self._stub = observability_pb2_grpc.UsageServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {master_key}"),) if master_key else ()

    async def __aenter__(self) -> "UsageClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel if this client opened it."""
        if self._owned is not None:
            await self._owned.close()

    def watch(self, *, tenant: str = "", model: str = "") -> UsageWatch:
        """Usage records as the engine writes them, optionally only one tenant's or one model's."""
        request = observability_pb2.WatchUsageRequest(tenant=tenant, model=model)
        return UsageWatch(self._stub.WatchUsage(request, metadata=self._metadata))

    async def metrics(self, *, deadline: float | None = 30.0) -> observability_pb2.GetMetricsResponse:
        """The Prometheus exposition and its content type."""
        try:
            return await self._stub.GetMetrics(observability_pb2.GetMetricsRequest(), timeout=deadline)
        except grpc.aio.AioRpcError as err:
            raise error_from_aio(err) from None

    async def dashboard(
        self,
        since: timestamp_pb2.Timestamp,
        until: timestamp_pb2.Timestamp | None = None,
        *,
        deadline: float | None = 60.0,
    ) -> observability_pb2.Dashboard:
        """The dashboard figures of [since, until) (until defaults to now)."""
        request = observability_pb2.GetDashboardRequest(since=since, until=until)
        try:
            return (await self._stub.GetDashboard(request, metadata=self._metadata, timeout=deadline)).dashboard
        except grpc.aio.AioRpcError as err:
            raise error_from_aio(err) from None
