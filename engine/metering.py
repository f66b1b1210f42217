"""The Meter: times one call, fills its UsageRecord and ResponseMeta, and records it however the call ends."""

import asyncio
import time
from collections.abc import Callable
from functools import partial

import grpc
from google.protobuf import timestamp_pb2

from chittycan.v1 import cache_pb2, completion_pb2, gateway_pb2, usage_pb2
from engine import errors, telemetry
from engine.auth import Principal
from engine.budgets import Settled
from engine.dispatch import Attempted
from engine.errors import GatewayError
from engine.ledger import UsageLedger
from engine.routing import Route, model_name_shown

HIT, MISS, BYPASS = usage_pb2.CACHE_STATUS_HIT, usage_pb2.CACHE_STATUS_MISS, usage_pb2.CACHE_STATUS_BYPASS


class InFlight:
    """Gateway calls running in this engine process."""

    def __init__(self) -> None:
        self.count = 0


# Takes the work of recording a finished call (serializing its usage record, queueing it for the ledger, its
# request line) and runs it soon, in the call's context: after the call's answer has gone out where it can.
Defer = Callable[[Callable[[], None]], None]


class Meter:
    """Used as a context manager around a whole call, so errors and cancellation are recorded too."""

    def __init__(
        self,
        ledger: UsageLedger,
        in_flight: InFlight,
        request_id: str,
        model: str,
        operation: usage_pb2.Operation.ValueType,
        defer: Defer | None = None,
    ) -> None:
        self._ledger = ledger
        self._in_flight = in_flight
        self._defer = defer
        self._started = time.perf_counter()
        self.attempted = Attempted()
        now = timestamp_pb2.Timestamp()
        now.FromNanoseconds(time.time_ns())
        self.record = usage_pb2.UsageRecord(
            request_id=request_id,
            time=now,
            requested_model=model_name_shown(model),
            operation=operation,
            http_status=200,
        )
        self._tenant = ""

    def __enter__(self) -> "Meter":
        self._in_flight.count += 1
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._in_flight.count -= 1
        record = self.record
        if isinstance(exc, GatewayError):
            record.http_status = exc.http_status
            record.error_reason = exc.reason
        elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
            record.cancelled = True
            record.http_status = 499
        elif exc is not None:
            record.http_status = 500
            record.error_reason = errors.INTERNAL
        record.latency_micros = int((time.perf_counter() - self._started) * 1e6)
        record.upstream_micros = int(self.attempted.upstream_seconds * 1e6)
        if self.attempted.route is not None and not record.provider:
            record.routed_model = self.attempted.route.model
            record.provider = self.attempted.route.provider
        telemetry.annotate_span(record)
        if self._defer is None:
            self._ledger.record(record)
        else:
            self._defer(partial(self._ledger.record, record))

    def caller(self, principal: Principal) -> None:
        """Attribute the call; named tenants are reported back in X-ChittyCan-Tenant."""
        self.record.tenant = principal.tenant
        self.record.key_id = principal.key_id
        self._tenant = principal.tenant if principal.named_tenant else ""

    def answered(self) -> Route:
        """The route that answered (the dispatcher sets it before returning)."""
        route = self.attempted.route
        if route is None:  # pragma: no cover - guarded by the dispatcher
            raise GatewayError(grpc.StatusCode.INTERNAL, errors.INTERNAL, "No route answered.")
        self.record.routed_model = route.model
        self.record.provider = route.provider
        return route

    def first_chunk(self) -> None:
        """Note the time to first chunk."""
        self.record.ttft_micros = int((time.perf_counter() - self._started) * 1e6)

    def usage(self, usage: completion_pb2.Usage) -> None:
        """Token counts of the answer."""
        self.record.prompt_tokens = usage.prompt_tokens
        self.record.completion_tokens = usage.completion_tokens
        self.record.cached_tokens = usage.prompt_tokens_details.cached_tokens

    def cost(self, cost: int | None) -> None:
        """The billed cost; None when the model has no price."""
        if cost is not None:
            self.record.cost_micros = cost
            self.record.cost_known = True

    def _timing(self, meta: gateway_pb2.ResponseMeta) -> gateway_pb2.ResponseMeta:
        """`meta` with the upstream time so far and the engine's own time (its total minus that)."""
        upstream = self.attempted.upstream_seconds
        meta.upstream_micros = int(upstream * 1e6)
        meta.overhead_micros = max(0, int((time.perf_counter() - self._started - upstream) * 1e6))
        return meta

    def header(self, status: usage_pb2.CacheStatus.ValueType) -> gateway_pb2.ResponseMeta:
        """What the client learns before the answer's cost is known."""
        route = self.answered()
        self.record.cache = status
        meta = gateway_pb2.ResponseMeta(cache=status, model=route.model, provider=route.provider, tenant=self._tenant)
        if self.attempted.rate_limits is not None:
            meta.rate_limits.CopyFrom(self.attempted.rate_limits)
        return self._timing(meta)

    def miss(
        self,
        status: usage_pb2.CacheStatus.ValueType,
        usage: completion_pb2.Usage | None,
        cost: int | None,
        settled: Settled | None,
    ) -> gateway_pb2.ResponseMeta:
        """Final figures of an answer that came from upstream."""
        meta = self.header(status)
        if usage is not None:
            self.usage(usage)
        self.cost(cost)
        if cost is not None:
            meta.cost_micros = cost
        self.budget(meta, settled)
        return meta

    def budget(self, meta: gateway_pb2.ResponseMeta, settled: Settled | None) -> None:
        """Remaining budget and any alert crossed, for budgeted tenants."""
        if settled is not None:
            meta.budget_remaining_micros = settled.remaining_micros
            self.record.budget_alert_percent = settled.alert_percent

    def hit(self, entry: cache_pb2.CacheEntry, usage: completion_pb2.Usage) -> gateway_pb2.ResponseMeta:
        """Figures of a cache hit: billed 0, saved what the original call cost."""
        record = self.record
        record.cache = HIT
        record.routed_model = entry.model
        record.provider = entry.provider
        record.cost_known = True
        record.saved_micros = entry.cost_micros
        self.usage(usage)
        meta = gateway_pb2.ResponseMeta(
            cache=HIT,
            cost_micros=0,
            model=entry.model,
            provider=entry.provider,
            tenant=self._tenant,
            age_seconds=max(0, int(time.time()) - entry.created_unix),
        )
        return self._timing(meta)
