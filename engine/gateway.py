"""One request through the engine: authenticate, route, consult the cache, dispatch, meter, record usage."""

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from google.protobuf import timestamp_pb2

from chittycan.v1 import cache_pb2, completion_pb2, embedding_pb2, gateway_pb2, model_pb2, usage_pb2
from engine.assemble import chunks_from_response, response_from_chunks
from engine.auth import Authenticator, Principal
from engine.cache import CachePolicy, ResponseCache, chat_cache_key, embedding_cache_key
from engine.dispatch import Attempted, Dispatcher
from engine.errors import GatewayError
from engine.ledger import UsageLedger
from engine.pricing import PriceTable
from engine.routing import Route, Router

_HIT, _MISS, _BYPASS = usage_pb2.CACHE_STATUS_HIT, usage_pb2.CACHE_STATUS_MISS, usage_pb2.CACHE_STATUS_BYPASS
_MODEL_CREATED = 1700000000


@dataclass(frozen=True, slots=True)
class CallContext:
    """Per-call facts from gRPC metadata: request id, credential and deadline (time.monotonic based)."""

    request_id: str
    authorization: str | None
    deadline: float | None


class Gateway:
    """Orchestrates the engine's parts for each RPC; the servicer only adapts gRPC to these methods."""

    def __init__(
        self,
        *,
        router: Router,
        dispatcher: Dispatcher,
        authenticator: Authenticator,
        cache: ResponseCache,
        policy: CachePolicy,
        prices: PriceTable,
        ledger: UsageLedger,
        shared_cache: bool = False,
    ) -> None:
        self._router = router
        self._dispatcher = dispatcher
        self._auth = authenticator
        self._cache = cache
        self._policy = policy
        self._prices = prices
        self._ledger = ledger
        self._shared_cache = shared_cache

    def _scope(self, principal: Principal) -> str:
        return "shared" if self._shared_cache else principal.scope_id

    async def complete(self, ctx: CallContext, call: gateway_pb2.CompleteRequest) -> gateway_pb2.CompleteResponse:
        """A non-streamed chat completion."""
        request = call.request
        meter = _Meter(self._ledger, ctx, request.model, usage_pb2.OPERATION_CHAT)
        with meter:
            principal = await self._authenticate(ctx, meter)
            routes = self._router.resolve(request.model)
            decision = self._policy.for_chat(request, call.options)
            key = chat_cache_key(self._scope(principal), routes[0], request) if decision.store else b""
            if decision.lookup and (entry := self._cache.get(key)) is not None and entry.HasField("chat"):
                meta = meter.hit(entry, entry.chat.usage)
                return gateway_pb2.CompleteResponse(response=entry.chat, meta=meta)
            response = await self._dispatcher.complete(
                routes, request, principal.upstream_key, ctx.deadline, meter.attempted
            )
            route = meter.answered()
            cost = self._prices.cost_micros(route, response.usage)
            if decision.store:
                self._cache.put(key, _entry(route, cost, chat=response))
            meta = meter.miss(_MISS if decision.lookup else _BYPASS, response.usage, cost)
            return gateway_pb2.CompleteResponse(response=response, meta=meta)
        raise AssertionError("unreachable")  # pragma: no cover

    async def embed(self, ctx: CallContext, call: gateway_pb2.EmbedRequest) -> gateway_pb2.EmbedResponse:
        """Embeddings."""
        request = call.request
        meter = _Meter(self._ledger, ctx, request.model, usage_pb2.OPERATION_EMBED)
        with meter:
            principal = await self._authenticate(ctx, meter)
            routes = self._router.resolve(request.model)
            decision = self._policy.for_embedding(call.options)
            key = embedding_cache_key(self._scope(principal), routes[0], request) if decision.store else b""
            if decision.lookup and (entry := self._cache.get(key)) is not None and entry.HasField("embedding"):
                meta = meter.hit(entry, _embedding_usage(entry.embedding))
                return gateway_pb2.EmbedResponse(response=entry.embedding, meta=meta)
            response = await self._dispatcher.embed(
                routes, request, principal.upstream_key, ctx.deadline, meter.attempted
            )
            route = meter.answered()
            usage = _embedding_usage(response)
            cost = self._prices.cost_micros(route, usage)
            if decision.store:
                self._cache.put(key, _entry(route, cost, embedding=response))
            meta = meter.miss(_MISS if decision.lookup else _BYPASS, usage, cost)
            return gateway_pb2.EmbedResponse(response=response, meta=meta)
        raise AssertionError("unreachable")  # pragma: no cover

    async def stream_chat(
        self, ctx: CallContext, call: gateway_pb2.StreamChatRequest
    ) -> AsyncIterator[gateway_pb2.StreamChatResponse]:
        """Header, chunks, trailer. The usage chunk reaches the client only when it asked for it."""
        request = call.request
        include_usage = request.stream_options.include_usage
        meter = _Meter(self._ledger, ctx, request.model, usage_pb2.OPERATION_STREAM_CHAT)
        with meter:
            principal = await self._authenticate(ctx, meter)
            routes = self._router.resolve(request.model)
            decision = self._policy.for_chat(request, call.options)
            key = chat_cache_key(self._scope(principal), routes[0], request) if decision.store else b""
            if decision.lookup and (entry := self._cache.get(key)) is not None and entry.HasField("chat"):
                trailer = meter.hit(entry, entry.chat.usage)
                yield gateway_pb2.StreamChatResponse(header=trailer)
                for chunk in chunks_from_response(entry.chat):
                    if include_usage or not chunk.HasField("usage"):
                        yield gateway_pb2.StreamChatResponse(chunk=chunk)
                yield gateway_pb2.StreamChatResponse(trailer=trailer)
                return
            collected: list[completion_pb2.ChatChunk] = []
            usage: completion_pb2.Usage | None = None
            status = _MISS if decision.lookup else _BYPASS
            stream = self._dispatcher.stream(routes, request, principal.upstream_key, ctx.deadline, meter.attempted)
            async for chunk in stream:
                if not collected:
                    meter.first_chunk()
                    yield gateway_pb2.StreamChatResponse(header=meter.header(status))
                collected.append(chunk)
                if chunk.HasField("usage"):
                    usage = chunk.usage
                    meter.usage(usage)
                    if not include_usage:
                        if not chunk.choices:
                            continue
                        chunk = _without_usage(chunk)
                yield gateway_pb2.StreamChatResponse(chunk=chunk)
            route = meter.answered()
            cost = None if usage is None else self._prices.cost_micros(route, usage)
            if decision.store and usage is not None:
                self._cache.put(key, _entry(route, cost, chat=response_from_chunks(collected)))
            yield gateway_pb2.StreamChatResponse(trailer=meter.miss(status, usage, cost))

    async def _authenticate(self, ctx: CallContext, meter: "_Meter") -> Principal:
        principal = await self._auth.authenticate(ctx.authorization)
        meter.record.tenant = principal.tenant
        meter.record.key_id = principal.key_id
        return principal

    async def list_models(self, ctx: CallContext) -> gateway_pb2.ListModelsResponse:
        """Every exact route name."""
        await self._auth.authenticate(ctx.authorization)
        return gateway_pb2.ListModelsResponse(models=[self._model(name) for name in self._router.models()])

    async def get_model(self, ctx: CallContext, model_id: str) -> gateway_pb2.GetModelResponse:
        """One routable model; NOT_FOUND when it does not route."""
        await self._auth.authenticate(ctx.authorization)
        self._router.resolve(model_id)
        return gateway_pb2.GetModelResponse(model=self._model(model_id))

    def _model(self, name: str) -> model_pb2.Model:
        return model_pb2.Model(id=name, created=_MODEL_CREATED, owned_by=self._router.resolve(name)[0].provider)


def _entry(
    route: Route,
    cost: int | None,
    *,
    chat: completion_pb2.ChatResponse | None = None,
    embedding: embedding_pb2.EmbeddingResponse | None = None,
) -> cache_pb2.CacheEntry:
    entry = cache_pb2.CacheEntry(model=route.model, provider=route.provider, chat=chat, embedding=embedding)
    if cost is not None:
        entry.cost_micros = cost
    return entry


def _embedding_usage(response: embedding_pb2.EmbeddingResponse) -> completion_pb2.Usage:
    return completion_pb2.Usage(prompt_tokens=response.usage.prompt_tokens, total_tokens=response.usage.total_tokens)


def _without_usage(chunk: completion_pb2.ChatChunk) -> completion_pb2.ChatChunk:
    stripped = completion_pb2.ChatChunk()
    stripped.CopyFrom(chunk)
    stripped.ClearField("usage")
    return stripped


class _Meter:
    """Times one call and writes its UsageRecord when the call ends, however it ends.

    Used as a context manager around the whole call so that errors and cancellation are recorded too.
    """

    def __init__(
        self, ledger: UsageLedger, ctx: CallContext, model: str, operation: usage_pb2.Operation.ValueType
    ) -> None:
        self._ledger = ledger
        self._started = time.perf_counter()
        self.attempted = Attempted()
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        self.record = usage_pb2.UsageRecord(
            request_id=ctx.request_id, time=now, requested_model=model, operation=operation, http_status=200
        )

    def __enter__(self) -> "_Meter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        record = self.record
        if isinstance(exc, GatewayError):
            record.http_status = exc.http_status
        elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
            record.cancelled = True
            record.http_status = 499
        elif exc is not None:
            record.http_status = 500
        elapsed = time.perf_counter() - self._started
        record.latency_micros = int(elapsed * 1e6)
        record.upstream_micros = int(self.attempted.upstream_seconds * 1e6)
        if self.attempted.route is not None and not record.provider:
            record.routed_model = self.attempted.route.model
            record.provider = self.attempted.route.provider
        self._ledger.record(record)

    def answered(self) -> Route:
        route = self.attempted.route
        if route is None:  # pragma: no cover - the dispatcher sets it before returning
            raise GatewayError(grpc.StatusCode.INTERNAL, "INTERNAL", "No route answered.")
        self.record.routed_model = route.model
        self.record.provider = route.provider
        return route

    def first_chunk(self) -> None:
        self.record.ttft_micros = int((time.perf_counter() - self._started) * 1e6)

    def usage(self, usage: completion_pb2.Usage) -> None:
        self.record.prompt_tokens = usage.prompt_tokens
        self.record.completion_tokens = usage.completion_tokens
        self.record.cached_tokens = usage.prompt_tokens_details.cached_tokens

    def _overhead_micros(self) -> int:
        elapsed = time.perf_counter() - self._started
        return max(0, int((elapsed - self.attempted.upstream_seconds) * 1e6))

    def header(self, status: usage_pb2.CacheStatus.ValueType) -> gateway_pb2.ResponseMeta:
        route = self.answered()
        return gateway_pb2.ResponseMeta(cache=status, model=route.model, provider=route.provider)

    def miss(
        self, status: usage_pb2.CacheStatus.ValueType, usage: completion_pb2.Usage | None, cost: int | None
    ) -> gateway_pb2.ResponseMeta:
        meta = self.header(status)
        self.record.cache = status
        if usage is not None:
            self.usage(usage)
        if cost is not None:
            meta.cost_micros = cost
            self.record.cost_micros = cost
            self.record.cost_known = True
        meta.overhead_micros = self._overhead_micros()
        return meta

    def hit(self, entry: cache_pb2.CacheEntry, usage: completion_pb2.Usage) -> gateway_pb2.ResponseMeta:
        record = self.record
        record.cache = _HIT
        record.routed_model = entry.model
        record.provider = entry.provider
        record.cost_known = True
        record.saved_micros = entry.cost_micros
        self.usage(usage)
        age = max(0, int(time.time()) - entry.created_unix)
        return gateway_pb2.ResponseMeta(
            cache=_HIT,
            cost_micros=0,
            model=entry.model,
            provider=entry.provider,
            age_seconds=age,
            overhead_micros=self._overhead_micros(),
        )
