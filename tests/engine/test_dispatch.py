"""Dispatcher: retries with backoff and retry-after, fallbacks, keys per route, deadlines and started streams.

Real providers talk to the real scripted upstream on loopback; only the dispatcher's sleep and jitter are
replaced (constructor arguments), so waits are recorded instead of slept.
"""

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from chittycan.v1 import completion_pb2, embedding_pb2
from engine import errors
from engine.config import ProviderSettings, RetrySettings
from engine.dispatch import Attempted, Dispatcher
from engine.errors import GatewayError
from engine.providers import build_provider
from engine.routing import Route
from engine.upstream_http import UpstreamHttp
from tests.upstream import ScriptedUpstream, load_fixture, start_upstream

HELLO = completion_pb2.ChatRequest(
    model="primary", messages=[completion_pb2.Message(role=completion_pb2.ROLE_USER, text="hello")]
)
RETRY = RetrySettings(attempts=3, backoff_initial=0.1, backoff_max=0.25, retry_after_max=10.0)
CLIENT_KEY = "sk-client-own"


def route(model: str, provider: str = "openai", upstream: str | None = None, timeout: float = 5.0) -> Route:
    return Route(model, provider, upstream or model, timeout, timeout, timeout)


PRIMARY = route("primary", upstream="gpt-4o")
FALLBACK = route("gpt-4o-mini")


@dataclass
class Harness:
    """A dispatcher over real providers, and what it waited."""

    upstream: ScriptedUpstream
    url: str
    session: UpstreamHttp
    waits: list[float] = field(default_factory=list)
    providers: dict[str, ProviderSettings] = field(default_factory=dict)

    def add(self, name: str, kind: str = "openai", *, key: str | None = None, key_env: str = "", **extra: Any) -> None:
        base = self.url if kind == "anthropic" else f"{self.url}/v1"
        settings = ProviderSettings(name, kind, extra.pop("base_url", base), key, key_env, **extra)
        self.providers[name] = settings

    def dispatcher(self, retry: RetrySettings = RETRY) -> Dispatcher:
        async def sleep(seconds: float) -> None:
            self.waits.append(seconds)

        built = {name: build_provider(s, self.session) for name, s in self.providers.items()}
        return Dispatcher(built, self.providers, retry, sleep=sleep, jitter=lambda: 0.5)

    def script(self, **kwargs: Any) -> None:
        self.upstream.script(**kwargs)

    def sent(self) -> list[tuple[str, str | None]]:
        """(upstream model, credential) of every request the upstream received."""
        return [
            (r.json["model"], r.headers.get("authorization") or r.headers.get("x-api-key"))
            for r in self.upstream.requests
        ]


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    upstream, runner, url = await start_upstream()
    session = UpstreamHttp()
    h = Harness(upstream, url, session)
    h.add("openai", key="sk-gateway-openai", key_env="OPENAI_API_KEY")
    h.add("anthropic", "anthropic", key="sk-ant-gateway", key_env="ANTHROPIC_API_KEY")
    try:
        yield h
    finally:
        await session.close()
        await runner.cleanup()


async def _complete(
    dispatcher: Dispatcher,
    routes: tuple[Route, ...],
    client_key: str | None = CLIENT_KEY,
    deadline: float | None = None,
    attempted: Attempted | None = None,
) -> completion_pb2.ChatResponse:
    return await dispatcher.complete(routes, HELLO, client_key, deadline, attempted or Attempted())


async def _stream(
    dispatcher: Dispatcher, routes: tuple[Route, ...], attempted: Attempted, client_key: str | None = CLIENT_KEY
) -> list[completion_pb2.ChatChunk]:
    return [chunk async for chunk in dispatcher.stream(routes, HELLO, client_key, None, attempted)]


async def _collect(chunks: AsyncIterator[completion_pb2.ChatChunk], into: list[completion_pb2.ChatChunk]) -> None:
    async for chunk in chunks:
        into.append(chunk)


async def test_first_route_answers_without_retries(harness: Harness) -> None:
    attempted = Attempted()
    response = await _complete(harness.dispatcher(), (PRIMARY, FALLBACK), attempted=attempted)
    assert response.choices[0].message.text == "Hello! You said: hello"
    assert attempted.route == PRIMARY
    assert attempted.upstream_seconds > 0
    assert harness.sent() == [("gpt-4o", f"Bearer {CLIENT_KEY}")]
    assert harness.waits == []


async def test_backoff_doubles_with_jitter_up_to_the_cap_then_falls_back(harness: Harness) -> None:
    harness.script(model="gpt-4o", status=500, times=10)
    retry = RetrySettings(attempts=4, backoff_initial=0.1, backoff_max=0.25, retry_after_max=10.0)
    attempted = Attempted()
    await _complete(harness.dispatcher(retry), (PRIMARY, FALLBACK), attempted=attempted)
    assert harness.waits == [0.05, 0.1, 0.125], "min(max, initial * 2**n) * jitter(0.5)"
    assert [m for m, _ in harness.sent()] == ["gpt-4o"] * 4 + ["gpt-4o-mini"]
    assert attempted.route == FALLBACK


@pytest.mark.parametrize(
    ("status", "headers", "wait"),
    [
        (429, {"retry-after": "3"}, 3.0),
        (429, {"retry-after-ms": "250"}, 0.25),
        (503, {"retry-after": "1.5"}, 1.5),
        (429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.05),
    ],
)
async def test_retry_after_replaces_the_backoff(
    harness: Harness, status: int, headers: dict[str, str], wait: float
) -> None:
    harness.script(model="gpt-4o", status=status, headers=headers)
    attempted = Attempted()
    await _complete(harness.dispatcher(), (PRIMARY, FALLBACK), attempted=attempted)
    assert harness.waits == [wait]
    assert attempted.route == PRIMARY


async def test_retry_after_beyond_the_limit_moves_on_without_waiting(harness: Harness) -> None:
    harness.script(model="gpt-4o", status=429, headers={"retry-after": "11"}, times=5)
    attempted = Attempted()
    await _complete(harness.dispatcher(), (PRIMARY, FALLBACK), attempted=attempted)
    assert harness.waits == []
    assert [m for m, _ in harness.sent()] == ["gpt-4o", "gpt-4o-mini"]
    assert attempted.route == FALLBACK


async def test_retry_after_beyond_the_limit_on_the_last_route_is_raised_with_it(harness: Harness) -> None:
    harness.script(status=429, headers={"retry-after": "30"}, times=5)
    with pytest.raises(GatewayError) as caught:
        await _complete(harness.dispatcher(), (PRIMARY,))
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.retry_after == 30


@pytest.mark.parametrize(
    ("status", "code"), [(400, grpc.StatusCode.INVALID_ARGUMENT), (404, grpc.StatusCode.NOT_FOUND)]
)
async def test_non_retryable_errors_neither_retry_nor_fall_back(
    harness: Harness, status: int, code: grpc.StatusCode
) -> None:
    harness.script(model="gpt-4o", status=status)
    with pytest.raises(GatewayError) as caught:
        await _complete(harness.dispatcher(), (PRIMARY, FALLBACK))
    assert caught.value.code == code
    assert harness.sent() == [("gpt-4o", f"Bearer {CLIENT_KEY}")]
    assert harness.waits == []


async def test_the_last_error_is_raised_when_every_route_fails(harness: Harness) -> None:
    harness.script(model="gpt-4o", status=500, times=10)
    harness.script(model="gpt-4o-mini", status=503, times=10)
    attempted = Attempted()
    with pytest.raises(GatewayError) as caught:
        await _complete(harness.dispatcher(), (PRIMARY, FALLBACK), attempted=attempted)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.detail is not None
    assert caught.value.detail.http_status == 503
    assert len(harness.sent()) == 6
    assert attempted.route is None


async def test_connection_refused_is_retried_then_falls_back(harness: Harness, closed_port: int) -> None:
    harness.add("dead", base_url=f"http://127.0.0.1:{closed_port}/v1", key="k", key_env="K")
    attempted = Attempted()
    await _complete(harness.dispatcher(), (route("primary", "dead", "gpt-4o"), FALLBACK), attempted=attempted)
    assert len(harness.waits) == 2, "three tries on the dead route"
    assert attempted.route == FALLBACK


async def test_connect_timeout_is_honoured(harness: Harness, unaccepting_port: int) -> None:
    harness.add("stuck", base_url=f"http://127.0.0.1:{unaccepting_port}/v1", key="k", key_env="K")
    slow_connect = Route("primary", "stuck", "gpt-4o", connect_timeout=0.2, first_byte_timeout=30, total_timeout=30)
    retry = RetrySettings(attempts=1, backoff_initial=0.1, backoff_max=0.25, retry_after_max=10.0)
    started = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        await _complete(harness.dispatcher(retry), (slow_connect,))
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.reason == errors.UPSTREAM_TIMEOUT
    assert 0.15 < time.monotonic() - started < 5


async def test_first_byte_timeout_is_honoured_and_retried(harness: Harness) -> None:
    harness.script(model="gpt-4o", delay=5, times=3)
    quick = Route("primary", "openai", "gpt-4o", connect_timeout=5, first_byte_timeout=0.2, total_timeout=30)
    started = time.monotonic()
    attempted = Attempted()
    await _complete(harness.dispatcher(), (quick, FALLBACK), attempted=attempted)
    assert 0.6 <= time.monotonic() - started < 4, "three tries of 0.2 s each"
    assert attempted.route == FALLBACK


async def test_total_timeout_bounds_a_trickling_body(harness: Harness) -> None:
    harness.script(model="gpt-4o", hang_after_chunks=0)
    short = Route("primary", "openai", "gpt-4o", connect_timeout=5, first_byte_timeout=30, total_timeout=0.3)
    retry = RetrySettings(attempts=1, backoff_initial=0.1, backoff_max=0.25, retry_after_max=10.0)
    started = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        await _complete(harness.dispatcher(retry), (short,))
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 4


async def test_a_passed_deadline_calls_nothing(harness: Harness) -> None:
    with pytest.raises(GatewayError) as caught:
        await _complete(harness.dispatcher(), (PRIMARY, FALLBACK), deadline=time.monotonic() - 1)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert harness.sent() == []


async def test_a_wait_past_the_deadline_moves_on_at_once(harness: Harness) -> None:
    harness.script(model="gpt-4o", status=429, headers={"retry-after": "5"})
    attempted = Attempted()
    await _complete(harness.dispatcher(), (PRIMARY, FALLBACK), deadline=time.monotonic() + 3, attempted=attempted)
    assert harness.waits == []
    assert attempted.route == FALLBACK


async def test_the_deadline_shortens_the_upstream_timeout(harness: Harness) -> None:
    harness.script(model="gpt-4o", delay=5)
    started = time.monotonic()
    with pytest.raises(GatewayError) as caught:
        await _complete(harness.dispatcher(), (PRIMARY,), deadline=time.monotonic() + 0.3)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 3
    assert len(harness.sent()) == 1, "no retry once the deadline has passed"


async def test_client_key_goes_only_to_the_primary_provider(harness: Harness) -> None:
    for model in ("claude-sonnet-4-20250514", "claude-3-haiku"):
        harness.script(model=model, status=529, body=load_fixture("anthropic/overloaded.json"), times=3)
    claude = route("claude-sonnet-4", "anthropic", "claude-sonnet-4-20250514")
    same_provider = route("claude-3-haiku", "anthropic")
    attempted = Attempted()
    await _complete(harness.dispatcher(), (claude, same_provider, FALLBACK), attempted=attempted)
    assert harness.sent() == [
        *[("claude-sonnet-4-20250514", CLIENT_KEY)] * 3,
        *[("claude-3-haiku", CLIENT_KEY)] * 3,
        ("gpt-4o-mini", "Bearer sk-gateway-openai"),
    ]
    assert attempted.route == FALLBACK


async def test_without_a_client_key_every_route_uses_the_gateway_keys(harness: Harness) -> None:
    harness.script(model="gpt-4o", status=500, times=3)
    await _complete(harness.dispatcher(), (PRIMARY, FALLBACK), client_key=None)
    assert {key for _, key in harness.sent()} == {"Bearer sk-gateway-openai"}


async def test_fallback_without_credentials_is_skipped(harness: Harness) -> None:
    harness.add("keyless-cloud", key=None, key_env="UNSET_VAR")
    harness.script(model="gpt-4o", status=500, times=3)
    with pytest.raises(GatewayError) as caught:
        await _complete(harness.dispatcher(), (PRIMARY, route("gpt-4o-mini", "keyless-cloud")))
    assert caught.value.detail is not None
    assert caught.value.detail.http_status == 500
    assert [m for m, _ in harness.sent()] == ["gpt-4o"] * 3


async def test_local_provider_without_key_is_still_tried_and_gets_no_client_key(harness: Harness) -> None:
    harness.add("ollama", key=None, key_env="", passthrough=False)
    local = route("ollama/llama3", "ollama", "llama3")
    await _complete(harness.dispatcher(), (local,))
    assert harness.sent() == [("llama3", None)]


async def test_gateway_credentials_refused_is_internal_not_the_clients_401(harness: Harness) -> None:
    harness.add("badkey", key="sk-bad", key_env="X")
    with pytest.raises(GatewayError) as caught:
        await _complete(harness.dispatcher(), (route("gpt-4o", "badkey"),), client_key=None)
    assert caught.value.code == grpc.StatusCode.INTERNAL
    assert caught.value.reason == errors.UPSTREAM_AUTH
    assert caught.value.detail is None, "rendered as a 500, not as the client's 401"
    with pytest.raises(GatewayError) as own:
        await _complete(harness.dispatcher(), (PRIMARY,), client_key="sk-bad")
    assert own.value.detail is not None
    assert own.value.detail.http_status == 401


async def test_stream_retries_and_falls_back_before_the_first_chunk(harness: Harness) -> None:
    harness.script(model="gpt-4o", status=502, times=3)
    attempted = Attempted()
    chunks = await _stream(harness.dispatcher(), (PRIMARY, FALLBACK), attempted)
    assert "".join(c.choices[0].delta.content for c in chunks if c.choices) == "Hello! You said: hello"
    assert attempted.route == FALLBACK
    assert len(harness.waits) == 2


async def test_stream_is_never_retried_after_the_first_chunk(harness: Harness) -> None:
    harness.script(model="gpt-4o", fail_after_chunks=2)
    attempted = Attempted()
    received: list[completion_pb2.ChatChunk] = []
    with pytest.raises(GatewayError) as caught:
        await _collect(harness.dispatcher().stream((PRIMARY, FALLBACK), HELLO, CLIENT_KEY, None, attempted), received)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert received
    assert attempted.route == PRIMARY
    assert [m for m, _ in harness.sent()] == ["gpt-4o"]
    assert harness.waits == []


async def test_anthropic_error_event_after_the_first_chunk_is_not_retried(harness: Harness) -> None:
    harness.script(body=load_fixture("anthropic/stream_overloaded.sse"))
    claude = route("claude-sonnet-4", "anthropic", "claude-sonnet-4-20250514")
    attempted = Attempted()
    with pytest.raises(GatewayError) as caught:
        await _stream(harness.dispatcher(), (claude, FALLBACK), attempted)
    assert caught.value.detail is not None
    assert caught.value.detail.code == "overloaded"
    assert len(harness.sent()) == 1


async def test_empty_stream_is_retried(harness: Harness) -> None:
    harness.script(model="gpt-4o", body=b"data: [DONE]\n\n")
    attempted = Attempted()
    chunks = await _stream(harness.dispatcher(), (PRIMARY,), attempted)
    assert chunks
    assert len(harness.sent()) == 2


async def test_embeddings_fall_back_too(harness: Harness) -> None:
    harness.script(model="text-embedding-3-small", status=500, times=3)
    request = embedding_pb2.EmbeddingRequest(model="small", text="hello")
    attempted = Attempted()
    routes = (route("text-embedding-3-small"), route("text-embedding-3-large"))
    response = await harness.dispatcher().embed(routes, request, CLIENT_KEY, None, attempted)
    assert response.data[0].values
    assert attempted.route == routes[1]
