"""Calls a route chain: per-route retries with backoff and jitter, then fallbacks; never retries a started stream."""

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import TypeVar

import grpc

from chittycan.v1 import completion_pb2, embedding_pb2, gateway_pb2
from engine import errors
from engine.config import ProviderSettings, RetrySettings
from engine.errors import GatewayError
from engine.providers.base import Provider, UpstreamCall
from engine.routing import Route

T = TypeVar("T")
_RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
)


@dataclass(frozen=True, slots=True)
class _Leg:
    """One route of a chain as it will be called: with which key, and whether that key is the client's own."""

    route: Route
    api_key: str | None
    client_key: bool


@dataclass(slots=True)
class Attempted:
    """What the dispatcher did: the route that answered, the time spent waiting on upstreams, and the rate limits
    the answering upstream reported."""

    route: Route | None = None
    upstream_seconds: float = 0.0
    rate_limits: gateway_pb2.RateLimits | None = None


class Dispatcher:
    """Runs a call against the routes of a chain in order until one answers."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        provider_settings: Mapping[str, ProviderSettings],
        retry: RetrySettings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._providers = providers
        self._settings = provider_settings
        self._retry = retry
        self._sleep = sleep
        self._jitter = jitter

    def _legs(self, routes: tuple[Route, ...], client_key: str | None) -> list[_Leg]:
        """The routes to try, each with its key.

        A pass-through key was sent for the model the client named, so it goes only to the primary route's
        provider (and only if that provider takes pass-through keys); a fallback on another provider uses the
        gateway's own key, and is skipped when the gateway has none for it (a provider that needs no key, such
        as Ollama, is always tried), so a client's key never reaches an upstream it was not meant for.
        """
        legs: list[_Leg] = []
        for i, route in enumerate(routes):
            settings = self._settings[route.provider]
            if client_key is not None and settings.passthrough and route.provider == routes[0].provider:
                legs.append(_Leg(route, client_key, client_key=True))
            elif i == 0 or settings.api_key is not None or not settings.api_key_env:
                legs.append(_Leg(route, settings.api_key, client_key=False))
        return legs

    def _call(self, leg: _Leg, deadline: float | None) -> UpstreamCall:
        route = leg.route
        total = route.total_timeout
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _deadline_passed()
            total = min(total, remaining)
        return UpstreamCall(
            model=route.upstream_model,
            api_key=leg.api_key,
            connect_timeout=min(route.connect_timeout, total),
            first_byte_timeout=min(route.first_byte_timeout, total),
            total_timeout=total,
        )

    async def _backoff(self, attempt: int, err: GatewayError, deadline: float | None) -> bool:
        """Wait before the next try; False when the upstream asks for longer than we are willing to wait, or the
        wait would outlast the caller's deadline (then the next route is tried at once)."""
        if err.retry_after is not None:
            if err.retry_after > self._retry.retry_after_max:
                return False
            delay = err.retry_after
        else:
            delay = min(self._retry.backoff_max, self._retry.backoff_initial * 2**attempt) * self._jitter()
        if deadline is not None and time.monotonic() + delay >= deadline:
            return False
        await self._sleep(delay)
        return True

    async def _unary(
        self,
        routes: tuple[Route, ...],
        client_key: str | None,
        deadline: float | None,
        attempted: Attempted,
        invoke: Callable[[Provider, UpstreamCall], Awaitable[T]],
    ) -> T:
        last: GatewayError | None = None
        for leg in self._legs(routes, client_key):
            provider = self._providers[leg.route.provider]
            for attempt in range(self._retry.attempts):
                call = self._call(leg, deadline)
                started = time.perf_counter()
                try:
                    result = await invoke(provider, call)
                except GatewayError as err:
                    if err.code not in _RETRYABLE:
                        raise _client_facing(err, leg) from None
                    last = err
                    if attempt + 1 == self._retry.attempts or not await self._backoff(attempt, err, deadline):
                        break
                    continue
                finally:
                    attempted.upstream_seconds += time.perf_counter() - started
                attempted.route = leg.route
                attempted.rate_limits = call.answer.rate_limits
                return result
        raise _exhausted(last)

    async def complete(
        self,
        routes: tuple[Route, ...],
        request: completion_pb2.ChatRequest,
        client_key: str | None,
        deadline: float | None,
        attempted: Attempted,
    ) -> completion_pb2.ChatResponse:
        """A non-streamed completion from the first route that answers."""
        return await self._unary(routes, client_key, deadline, attempted, lambda p, c: p.complete(request, c))

    async def embed(
        self,
        routes: tuple[Route, ...],
        request: embedding_pb2.EmbeddingRequest,
        client_key: str | None,
        deadline: float | None,
        attempted: Attempted,
    ) -> embedding_pb2.EmbeddingResponse:
        """Embeddings from the first route that answers."""
        return await self._unary(routes, client_key, deadline, attempted, lambda p, c: p.embed(request, c))

    async def stream(
        self,
        routes: tuple[Route, ...],
        request: completion_pb2.ChatRequest,
        client_key: str | None,
        deadline: float | None,
        attempted: Attempted,
    ) -> AsyncGenerator[completion_pb2.ChatChunk, None]:
        """Chunks from the first route whose stream starts; `attempted.route` is set before the first chunk.

        Retries and fallbacks happen only until the first chunk arrives; after that an error propagates.
        """
        last: GatewayError | None = None
        for leg in self._legs(routes, client_key):
            provider = self._providers[leg.route.provider]
            for attempt in range(self._retry.attempts):
                call = self._call(leg, deadline)
                chunks = provider.stream_completion(request, call)
                started = time.perf_counter()
                async with aclosing(chunks) as it:  # type: ignore[type-var]
                    try:
                        first = await anext(it)
                    except StopAsyncIteration:
                        first = None
                        err = GatewayError(
                            grpc.StatusCode.UNAVAILABLE,
                            errors.UPSTREAM_UNAVAILABLE,
                            "The upstream sent an empty stream.",
                        )
                    except GatewayError as caught:
                        first, err = None, caught
                    finally:
                        attempted.upstream_seconds += time.perf_counter() - started
                    if first is not None:
                        attempted.route = leg.route
                        attempted.rate_limits = call.answer.rate_limits
                        yield first
                        while True:
                            started = time.perf_counter()
                            try:
                                chunk = await anext(it)
                            except StopAsyncIteration:
                                return
                            finally:
                                attempted.upstream_seconds += time.perf_counter() - started
                            yield chunk
                if err.code not in _RETRYABLE:
                    raise _client_facing(err, leg)
                last = err
                if attempt + 1 == self._retry.attempts or not await self._backoff(attempt, err, deadline):
                    break
        raise _exhausted(last)


def _client_facing(err: GatewayError, leg: _Leg) -> GatewayError:
    """An upstream auth failure is the client's own 401 only when the client's key was passed through."""
    if err.reason == errors.UPSTREAM_AUTH and not leg.client_key:
        return GatewayError(
            grpc.StatusCode.INTERNAL, errors.UPSTREAM_AUTH, "The gateway's credentials were refused by the upstream."
        )
    return err


def _deadline_passed() -> GatewayError:
    return GatewayError(
        grpc.StatusCode.DEADLINE_EXCEEDED, errors.UPSTREAM_TIMEOUT, "The request's deadline passed before an answer."
    )


def _exhausted(last: GatewayError | None) -> GatewayError:
    if last is None:
        return GatewayError(
            grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_UNAVAILABLE, "No upstream could serve the request."
        )
    return last
