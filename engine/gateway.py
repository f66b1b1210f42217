"""One request through the engine: authenticate, route, consult the cache, charge, dispatch, meter, record."""

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing
from dataclasses import dataclass
from typing import TypeVar

from chittycan.v1 import cache_pb2, completion_pb2, embedding_pb2, gateway_pb2, model_pb2, usage_pb2
from engine import errors
from engine.accounting import Accountant, estimate_prompt_tokens
from engine.assemble import chunks_from_response, response_from_chunks
from engine.auth import READ, WRITE, Authenticator, Principal
from engine.batching import batches
from engine.budgets import Hold, Settled
from engine.cache import CachePolicy, ResponseCache, chat_cache_key, embedding_cache_key
from engine.dispatch import Dispatcher
from engine.errors import GatewayError
from engine.ledger import UsageLedger
from engine.metering import BYPASS, MISS, Defer, InFlight, Meter
from engine.pricing import PriceTable
from engine.routing import Route, Router, model_name_shown

_MODEL_CREATED = 1700000000
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CallContext:
    """Per-call facts from gRPC metadata: request id, credential and deadline (time.monotonic based), and where
    the call's bookkeeping goes (`defer`, see metering.Defer; None: done as the call ends)."""

    request_id: str
    authorization: str | None
    deadline: float | None
    defer: Defer | None = None


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
        accountant: Accountant,
        ledger: UsageLedger,
        in_flight: InFlight,
        shared_cache: bool = False,
    ) -> None:
        self._router = router
        self._dispatcher = dispatcher
        self._auth = authenticator
        self._cache = cache
        self._policy = policy
        self._prices = prices
        self._accountant = accountant
        self._ledger = ledger
        self._in_flight = in_flight
        self._shared_cache = shared_cache

    def _start(
        self, ctx: CallContext, options: gateway_pb2.CallOptions, model: str, meter: Meter, *, embedding: bool = False
    ) -> tuple[Principal, tuple[Route, ...]]:
        try:
            principal = self._auth.authenticate(ctx.authorization, options.tenant)
        except GatewayError as err:
            if err.reason != errors.MISSING_API_KEY or not self._keyless(model, embedding):
                raise
            principal = self._auth.anonymous()
        meter.caller(principal)
        principal.require(WRITE)
        return principal, self._router.resolve(model, embedding=embedding)

    def _meter(self, ctx: CallContext, model: str, operation: usage_pb2.Operation.ValueType) -> Meter:
        return Meter(self._ledger, self._in_flight, ctx.request_id, model, operation, ctx.defer)

    def _keyless(self, model: str, embedding: bool) -> bool:
        """Whether `model` is served inside the engine, where no credential is needed (unknown models are not)."""
        try:
            return self._router.in_process(self._router.resolve(model, embedding=embedding))
        except GatewayError:
            return False

    def _scope(self, principal: Principal) -> str:
        return "shared" if self._shared_cache else principal.scope_id

    async def complete(self, ctx: CallContext, call: gateway_pb2.CompleteRequest) -> gateway_pb2.CompleteResponse:
        """A non-streamed chat completion."""
        request = call.request
        with self._meter(ctx, request.model, usage_pb2.OPERATION_CHAT) as meter:
            principal, routes = self._start(ctx, call.options, request.model, meter)
            decision = self._policy.for_chat(request, call.options)
            key = chat_cache_key(self._scope(principal), routes[0], request) if decision.store else b""
            if decision.lookup and (entry := self._cache.get(key)) is not None and entry.HasField("chat"):
                return gateway_pb2.CompleteResponse(response=entry.chat, meta=meter.hit(entry, entry.chat.usage))
            hold = await self._accountant.admit(principal.tenant, routes[0], request)
            response = await self._held(
                hold, self._dispatcher.complete(routes, request, principal.upstream_key, ctx.deadline, meter.attempted)
            )
            route = meter.answered()
            cost = self._prices.cost_micros(route, response.usage)
            settled = await self._settle(hold, cost)
            if decision.store:
                self._cache.put(key, _entry(route, cost, chat=response))
            meta = meter.miss(MISS if decision.lookup else BYPASS, response.usage, cost, settled)
            return gateway_pb2.CompleteResponse(response=response, meta=meta)
        raise AssertionError("unreachable")  # pragma: no cover

    async def embed(self, ctx: CallContext, call: gateway_pb2.EmbedRequest) -> gateway_pb2.EmbedResponse:
        """Embeddings."""
        request = call.request
        with self._meter(ctx, request.model, usage_pb2.OPERATION_EMBED) as meter:
            principal, routes = self._start(ctx, call.options, request.model, meter, embedding=True)
            decision = self._policy.for_embedding(call.options)
            key = embedding_cache_key(self._scope(principal), routes[0], request) if decision.store else b""
            if decision.lookup and (entry := self._cache.get(key)) is not None and entry.HasField("embedding"):
                meta = meter.hit(entry, _embedding_usage(entry.embedding))
                return gateway_pb2.EmbedResponse(response=entry.embedding, meta=meta)
            hold = await self._accountant.admit(principal.tenant, routes[0], None)
            response = await self._held(
                hold, self._dispatcher.embed(routes, request, principal.upstream_key, ctx.deadline, meter.attempted)
            )
            route = meter.answered()
            usage = _embedding_usage(response)
            cost = self._prices.cost_micros(route, usage)
            settled = await self._settle(hold, cost)
            if decision.store:
                self._cache.put(key, _entry(route, cost, embedding=response))
            meta = meter.miss(MISS if decision.lookup else BYPASS, usage, cost, settled)
            return gateway_pb2.EmbedResponse(response=response, meta=meta)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _held(self, hold: Hold | None, call: Awaitable[T]) -> T:
        """Await an upstream call; its budget hold is released when the call fails or is cancelled."""
        try:
            return await call
        except BaseException:
            if hold is not None:
                await self._accountant.release(hold)
            raise

    async def _settle(self, hold: Hold | None, cost: int | None) -> Settled | None:
        if hold is None:
            return None
        return await asyncio.shield(self._accountant.settle(hold, cost or 0))

    async def stream_chat(
        self, ctx: CallContext, call: gateway_pb2.StreamChatRequest
    ) -> AsyncIterator[gateway_pb2.StreamChatResponse]:
        """Header, chunks, trailer. The usage chunk reaches the client only when it asked for it.

        A budgeted stream whose running cost passes what the tenant had left is ended with finish_reason
        "length"; a stream the client abandons is still charged for the chunks it received.
        """
        request = call.request
        include_usage = request.stream_options.include_usage
        operation = usage_pb2.OPERATION_STREAM_CHAT
        with self._meter(ctx, request.model, operation) as meter:
            principal, routes = self._start(ctx, call.options, request.model, meter)
            decision = self._policy.for_chat(request, call.options)
            key = chat_cache_key(self._scope(principal), routes[0], request) if decision.store else b""
            if decision.lookup and (entry := self._cache.get(key)) is not None and entry.HasField("chat"):
                meta = meter.hit(entry, entry.chat.usage)
                yield gateway_pb2.StreamChatResponse(header=meta)
                replay = [c for c in chunks_from_response(entry.chat) if include_usage or not c.HasField("usage")]
                yield gateway_pb2.StreamChatResponse(chunks=gateway_pb2.ChunkBatch(chunks=replay))
                yield gateway_pb2.StreamChatResponse(trailer=meta)
                return
            hold = await self._accountant.admit(principal.tenant, routes[0], request)
            run = _StreamRun(estimate_prompt_tokens(request.messages))
            status = MISS if decision.lookup else BYPASS
            settled_here = False
            try:
                stream = self._dispatcher.stream(routes, request, principal.upstream_key, ctx.deadline, meter.attempted)
                async with aclosing(batches(stream)) as arrivals:
                    async for arrived in arrivals:
                        if not run.collected:
                            meter.first_chunk()
                            yield gateway_pb2.StreamChatResponse(header=meter.header(status))
                        out = gateway_pb2.StreamChatResponse()
                        for chunk in arrived:
                            run.add(chunk)
                            if chunk.HasField("usage"):
                                if not include_usage:
                                    if not chunk.choices:
                                        continue
                                    chunk = _without_usage(chunk)
                            elif hold is not None and self._over_allowance(hold, meter.answered(), run):
                                run.cut = True
                                out.chunks.chunks.append(chunk)
                                out.chunks.chunks.extend(run.cut_ending(include_usage))
                                break
                            out.chunks.chunks.append(chunk)
                        if out.HasField("chunks"):
                            yield out
                        if run.cut:
                            break
                route = meter.answered()
                usage = run.usage()
                cost = self._prices.cost_micros(route, usage)
                settled = await self._settle(hold, cost)
                settled_here = True
                if decision.store and run.usage_seen and not run.cut:
                    self._cache.put(key, _entry(route, cost, chat=response_from_chunks(run.collected)))
                yield gateway_pb2.StreamChatResponse(trailer=meter.miss(status, usage, cost, settled))
            finally:
                if not settled_here:
                    await self._charge_unfinished(hold, meter, run)

    def _over_allowance(self, hold: Hold, route: Route, run: "_StreamRun") -> bool:
        running = self._accountant.estimate_micros(route, run.prompt_estimate, run.completion_chunks)
        return running > hold.allowance_micros

    async def _charge_unfinished(self, hold: Hold | None, meter: Meter, run: "_StreamRun") -> None:
        """A stream that failed or was abandoned: meter and charge the chunks delivered (budget or not), or
        release the hold when nothing was."""
        if not run.completion_chunks or meter.attempted.route is None:
            if hold is not None:
                await self._accountant.release(hold)
            return
        usage = run.usage()
        cost = self._prices.cost_micros(meter.attempted.route, usage)
        meter.usage(usage)
        meter.cost(cost)
        await self._settle(hold, cost)

    async def list_models(self, ctx: CallContext) -> gateway_pb2.ListModelsResponse:
        """Every exact route name."""
        self._auth.authenticate(ctx.authorization).require(READ)
        return gateway_pb2.ListModelsResponse(models=[self._model(name) for name in self._router.models()])

    async def get_model(self, ctx: CallContext, model_id: str) -> gateway_pb2.GetModelResponse:
        """One routable model; NOT_FOUND when it does not route."""
        self._auth.authenticate(ctx.authorization).require(READ)
        return gateway_pb2.GetModelResponse(model=self._model(model_id))

    def _model(self, name: str) -> model_pb2.Model:
        try:
            route = self._router.resolve(name)[0]
        except GatewayError as err:
            if err.reason != errors.MODEL_NOT_FOUND:
                raise
            # OpenAI's models endpoint words it so and names the parameter; its chat endpoint does neither.
            message = f"The model '{model_name_shown(name)}' does not exist"
            raise GatewayError(err.code, err.reason, message, param="model") from None
        return model_pb2.Model(id=name, created=_MODEL_CREATED, owned_by=route.provider)


class _StreamRun:
    """What a stream has delivered so far: chunks, a completion-token count, the upstream's usage if seen."""

    def __init__(self, prompt_estimate: int) -> None:
        self.prompt_estimate = prompt_estimate
        self.collected: list[completion_pb2.ChatChunk] = []
        self.completion_chunks = 0
        self.usage_seen: completion_pb2.Usage | None = None
        self.cut = False

    def add(self, chunk: completion_pb2.ChatChunk) -> None:
        self.collected.append(chunk)
        if chunk.HasField("usage"):
            self.usage_seen = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content or delta.refusal or any(c.arguments for c in delta.tool_calls):
                self.completion_chunks += 1  # streams carry about one token per chunk

    def usage(self) -> completion_pb2.Usage:
        """The upstream's usage, or an estimate (prompt from its text, one token per content chunk)."""
        if self.usage_seen is not None and not self.cut:
            return self.usage_seen
        prompt = self.usage_seen.prompt_tokens if self.usage_seen is not None else self.prompt_estimate
        return completion_pb2.Usage(
            prompt_tokens=prompt,
            completion_tokens=self.completion_chunks,
            total_tokens=prompt + self.completion_chunks,
        )

    def cut_ending(self, include_usage: bool) -> list[completion_pb2.ChatChunk]:
        """The end of a stream cut short by its budget: a finish chunk with "length", then usage if asked."""
        last = self.collected[-1]
        finish = completion_pb2.ChatChunk(id=last.id, created=last.created, model=last.model)
        indexes = sorted({c.index for chunk in self.collected for c in chunk.choices}) or [0]
        for index in indexes:
            finish.choices.add(index=index, finish_reason=completion_pb2.FINISH_REASON_LENGTH).delta.SetInParent()
        ending = [finish]
        if include_usage:
            ending.append(completion_pb2.ChatChunk(id=last.id, created=last.created, model=last.model))
            ending[-1].usage.CopyFrom(self.usage())
        return ending


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
