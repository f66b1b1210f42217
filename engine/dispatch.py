"""Calls a route chain: per-route retries with backoff and jitter, then fallbacks; never retries a started stream."""

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import TypeVar

import grpc

from chittycan.v1 import completion_pb2, embedding_pb2
from engine import errors
from engine.config import ProviderSettings, RetrySettings
from engine.errors import GatewayError
from engine.providers.base import Provider, UpstreamCall
from engine.routing import Route

T = TypeVar("T")
_RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
)


@dataclass(slots=True)
class Attempted:
    """What the dispatcher did: the route that answered and the time spent waiting on upstreams."""

    route: Route | None = None
    upstream_seconds: float = 0.0


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

    def _call(self, route: Route, client_key: str | None, deadline: float | None) -> UpstreamCall:
        total = route.total_timeout
        if deadline is not None:
            total = max(0.001, min(total, deadline - time.monotonic()))
        key = client_key if client_key is not None else self._settings[route.provider].api_key
        return UpstreamCall(
            model=route.upstream_model,
            api_key=key,
            connect_timeout=min(route.connect_timeout, total),
            first_byte_timeout=min(route.first_byte_timeout, total),
            total_timeout=total,
        )

    async def _backoff(self, attempt: int, err: GatewayError) -> bool:
        """Wait before the next try; False when the upstream asks for longer than we are willing to wait."""
        if err.retry_after is not None:
            if err.retry_after > self._retry.retry_after_max:
                return False
            delay = err.retry_after
        else:
            delay = min(self._retry.backoff_max, self._retry.backoff_initial * 2**attempt) * self._jitter()
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
        for route in routes:
            provider = self._providers[route.provider]
            for attempt in range(self._retry.attempts):
                started = time.perf_counter()
                try:
                    result = await invoke(provider, self._call(route, client_key, deadline))
                except GatewayError as err:
                    if err.code not in _RETRYABLE:
                        raise _client_facing(err, client_key) from None
                    last = err
                    if attempt + 1 == self._retry.attempts or not await self._backoff(attempt, err):
                        break
                    continue
                finally:
                    attempted.upstream_seconds += time.perf_counter() - started
                attempted.route = route
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
    ) -> AsyncIterator[completion_pb2.ChatChunk]:
        """Chunks from the first route whose stream starts; `attempted.route` is set before the first chunk.

        Retries and fallbacks happen only until the first chunk arrives; after that an error propagates.
        """
        last: GatewayError | None = None
        for route in routes:
            provider = self._providers[route.provider]
            for attempt in range(self._retry.attempts):
                started = time.perf_counter()
                chunks = provider.stream_completion(request, self._call(route, client_key, deadline))
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
                        attempted.route = route
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
                    raise _client_facing(err, client_key)
                last = err
                if attempt + 1 == self._retry.attempts or not await self._backoff(attempt, err):
                    break
        raise _exhausted(last)


def _client_facing(err: GatewayError, client_key: str | None) -> GatewayError:
    """An upstream auth failure is the client's own 401 only when the client's key was passed through."""
    if err.reason == errors.UPSTREAM_AUTH and client_key is None:
        return GatewayError(
            grpc.StatusCode.INTERNAL, errors.UPSTREAM_AUTH, "The gateway's credentials were refused by the upstream."
        )
    return err


def _exhausted(last: GatewayError | None) -> GatewayError:
    if last is None:
        return GatewayError(
            grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_UNAVAILABLE, "No upstream could serve the request."
        )
    return last
