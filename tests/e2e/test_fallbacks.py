"""Retries and fallbacks end to end: which upstream failures move on to the next route, and which never do."""

import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from chittycan.v1 import usage_pb2
from tests.stack import API_KEY, Stack
from tests.upstream import load_fixture

HELLO = [{"role": "user", "content": "hello"}]
PRIMARY = "primary"
FALLBACK = "gpt-4o-mini"
StackFactory = Callable[..., Stack]


def _route(**extra: Any) -> dict[str, Any]:
    """A route `primary` answered by OpenAI's gpt-4o, falling back to the gpt-4o-mini route."""
    return {"model": PRIMARY, "provider": "openai", "upstream_model": "gpt-4o", "fallbacks": [FALLBACK], **extra}


def _sdk(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(api_key=API_KEY, base_url=stack.base_url, max_retries=0)


def _upstream_models(stack: Stack) -> list[str]:
    return [r.json["model"] for r in stack.upstream_requests("/v1/chat/completions")]


def _records(stack: Stack) -> list[usage_pb2.UsageRecord]:
    stack.flush()
    return stack.call(lambda: list(stack.engine.ledger.read()))


def _ask(stack: Stack, **kwargs: Any) -> tuple[str, str]:
    """(X-ChittyCan-Model, content) of one non-streamed call to `primary`."""
    with _sdk(stack) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(model=PRIMARY, messages=HELLO, **kwargs)
    return raw.headers["x-chittycan-model"], raw.parse().choices[0].message.content or ""


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_retryable_status_falls_back_after_retries(stack_factory: StackFactory, status: int) -> None:
    stack = stack_factory(routes=[_route()])
    stack.call(lambda: stack.upstream.script(model="gpt-4o", status=status, times=10))
    model, content = _ask(stack)
    assert model == FALLBACK
    assert content == "Hello! You said: hello"
    assert _upstream_models(stack) == ["gpt-4o", "gpt-4o", FALLBACK], "retry.attempts = 2, then the fallback"
    [record] = _records(stack)
    assert (record.requested_model, record.routed_model, record.provider) == (PRIMARY, FALLBACK, "openai")
    assert record.http_status == 200
    assert record.cost_known
    assert record.cost_micros > 0, "billed at the fallback's price"


def test_retry_count_follows_config(stack_factory: StackFactory) -> None:
    stack = stack_factory(routes=[_route()], retry={"attempts": 4})
    stack.call(lambda: stack.upstream.script(model="gpt-4o", status=500, times=10))
    assert _ask(stack)[0] == FALLBACK
    assert _upstream_models(stack) == ["gpt-4o"] * 4 + [FALLBACK]


def test_primary_recovers_within_its_retries(stack_factory: StackFactory) -> None:
    stack = stack_factory(routes=[_route()])
    stack.call(lambda: stack.upstream.script(model="gpt-4o", status=503))
    assert _ask(stack)[0] == PRIMARY
    assert _upstream_models(stack) == ["gpt-4o", "gpt-4o"]


def test_retry_after_within_limit_is_honoured(stack_factory: StackFactory) -> None:
    stack = stack_factory(routes=[_route()], retry={"retry_after_max": 1.0})
    stack.call(lambda: stack.upstream.script(model="gpt-4o", status=429, headers={"retry-after-ms": "300"}))
    started = time.monotonic()
    assert _ask(stack)[0] == PRIMARY, "the primary answers the retry"
    assert time.monotonic() - started >= 0.3
    assert _upstream_models(stack) == ["gpt-4o", "gpt-4o"]


def test_retry_after_beyond_limit_moves_on_at_once(stack_factory: StackFactory) -> None:
    stack = stack_factory(routes=[_route()], retry={"retry_after_max": 1.0})
    stack.call(lambda: stack.upstream.script(model="gpt-4o", status=429, headers={"retry-after": "30"}, times=5))
    started = time.monotonic()
    assert _ask(stack)[0] == FALLBACK
    assert time.monotonic() - started < 5
    assert _upstream_models(stack) == ["gpt-4o", FALLBACK], "no retry on the route that asked for 30 s"


def test_first_byte_timeout_falls_back(stack_factory: StackFactory) -> None:
    stack = stack_factory(routes=[_route(first_byte_timeout=0.2)], retry={"attempts": 1})
    stack.call(lambda: stack.upstream.script(model="gpt-4o", delay=3))
    started = time.monotonic()
    assert _ask(stack)[0] == FALLBACK
    assert time.monotonic() - started < 2
    [record] = _records(stack)
    assert record.routed_model == FALLBACK


def test_hung_body_hits_the_total_timeout_and_falls_back(stack_factory: StackFactory) -> None:
    # The headers arrive, the body never does.
    stack = stack_factory(routes=[_route(timeout=0.3)], retry={"attempts": 1})
    stack.call(lambda: stack.upstream.script(model="gpt-4o", hang_after_chunks=0))
    started = time.monotonic()
    assert _ask(stack)[0] == FALLBACK
    assert time.monotonic() - started < 2


def test_connection_refused_falls_back(stack_factory: StackFactory, closed_port: int) -> None:
    stack = stack_factory(
        providers={"dead": {"kind": "openai", "base_url": f"http://127.0.0.1:{closed_port}/v1"}},
        routes=[{"model": PRIMARY, "provider": "dead", "upstream_model": "gpt-4o", "fallbacks": [FALLBACK]}],
    )
    model, content = _ask(stack)
    assert (model, content) == (FALLBACK, "Hello! You said: hello")
    [sent] = stack.upstream_requests()
    assert sent.headers["authorization"] == "Bearer sk-gateway-openai", (
        "the caller's key is not sent to a fallback on another provider; the gateway's key is"
    )
    [record] = _records(stack)
    assert (record.routed_model, record.provider) == (FALLBACK, "openai")


def test_connect_timeout_falls_back(stack_factory: StackFactory, unaccepting_port: int) -> None:
    stack = stack_factory(
        providers={"stuck": {"kind": "openai", "base_url": f"http://127.0.0.1:{unaccepting_port}/v1"}},
        routes=[
            {"model": PRIMARY, "provider": "stuck", "connect_timeout": 0.2, "timeout": 30, "fallbacks": [FALLBACK]}
        ],
        retry={"attempts": 1},
    )
    started = time.monotonic()
    assert _ask(stack)[0] == FALLBACK
    assert time.monotonic() - started < 3


def test_stream_falls_back_before_the_first_byte(stack_factory: StackFactory) -> None:
    stack = stack_factory(routes=[_route()])
    stack.call(lambda: stack.upstream.script(model="gpt-4o", status=500, times=10))
    with _sdk(stack) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(model=PRIMARY, messages=HELLO, stream=True)
        chunks = list(raw.parse())
    assert raw.headers["x-chittycan-model"] == FALLBACK
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello! You said: hello"
    assert _upstream_models(stack) == ["gpt-4o", "gpt-4o", FALLBACK]
    [record] = _records(stack)
    assert (record.routed_model, record.operation) == (FALLBACK, usage_pb2.OPERATION_STREAM_CHAT)


def test_no_retry_or_fallback_after_the_first_streamed_byte(stack_factory: StackFactory) -> None:
    stack = stack_factory(routes=[_route()])
    stack.call(lambda: stack.upstream.script(model="gpt-4o", fail_after_chunks=2))
    received: list[Any] = []
    with _sdk(stack) as sdk:
        stream = sdk.chat.completions.create(model=PRIMARY, messages=HELLO, stream=True)
        with pytest.raises(openai.APIError):
            received.extend(stream)  # list.extend keeps what arrived before the error
    assert received
    assert received[0].choices[0].delta.role == "assistant"
    assert _upstream_models(stack) == ["gpt-4o"], "exactly one upstream request"
    [record] = _records(stack)
    assert record.routed_model == PRIMARY


def test_anthropic_error_event_mid_stream_is_not_retried(stack_factory: StackFactory) -> None:
    stack = stack_factory(routes=[{"model": "claude-sonnet-4", "provider": "anthropic", "fallbacks": [FALLBACK]}])
    stack.call(lambda: stack.upstream.script(body=load_fixture("anthropic/stream_overloaded.sse")))
    with _sdk(stack) as sdk:
        stream = sdk.chat.completions.create(model="claude-sonnet-4", messages=HELLO, stream=True)
        with pytest.raises(openai.APIError):
            list(stream)
    assert len(stack.upstream_requests()) == 1


@pytest.mark.parametrize("status", [400, 404])
def test_non_retryable_error_never_falls_back(stack_factory: StackFactory, status: int) -> None:
    stack = stack_factory(routes=[_route()])
    body = load_fixture("openai/context_length_exceeded.json") if status == 400 else None
    stack.call(lambda: stack.upstream.script(model="gpt-4o", status=status, body=body))
    with _sdk(stack) as sdk, pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model=PRIMARY, messages=HELLO)
    assert caught.value.status_code == status
    assert _upstream_models(stack) == ["gpt-4o"]


def test_last_error_is_reported_when_every_route_fails(stack_factory: StackFactory) -> None:
    stack = stack_factory(routes=[_route()])
    stack.call(lambda: stack.upstream.script(status=503, times=10))
    with _sdk(stack) as sdk, pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model=PRIMARY, messages=HELLO)
    assert caught.value.status_code == 503
    assert _upstream_models(stack) == ["gpt-4o", "gpt-4o", FALLBACK, FALLBACK]
    [record] = _records(stack)
    assert record.http_status == 503


def test_cross_provider_fallback_from_anthropic_to_openai(stack_factory: StackFactory) -> None:
    stack = stack_factory(
        routes=[{"model": "claude-sonnet-4", "provider": "anthropic", "fallbacks": [FALLBACK]}], retry={"attempts": 1}
    )
    stack.call(lambda: stack.upstream.script(status=529, body=load_fixture("anthropic/overloaded.json")))
    with _sdk(stack) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(model="claude-sonnet-4", messages=HELLO)
    assert raw.headers["x-chittycan-model"] == FALLBACK
    assert raw.parse().choices[0].message.content == "Hello! You said: hello"
    anthropic_call, openai_call = stack.upstream_requests()
    assert anthropic_call.headers["x-api-key"] == API_KEY
    assert openai_call.headers["authorization"] == "Bearer sk-gateway-openai"
    assert API_KEY not in openai_call.raw.decode() + str(openai_call.headers)


def test_fallback_without_gateway_credentials_is_skipped(stack_factory: StackFactory) -> None:
    upstream_url = stack_factory().upstream_url  # the scripted upstream is shared by every stack of a test
    stack = stack_factory(
        providers={"other": {"kind": "openai", "base_url": f"{upstream_url}/v1", "api_key_env": "UNSET_KEY_VAR"}},
        routes=[{"model": "spare", "provider": "other", "upstream_model": "gpt-4o-mini"}, _route(fallbacks=["spare"])],
        retry={"attempts": 1},
    )
    stack.call(lambda: stack.upstream.script(model="gpt-4o", status=503))
    with _sdk(stack) as sdk, pytest.raises(openai.InternalServerError) as caught:
        sdk.chat.completions.create(model=PRIMARY, messages=HELLO)
    assert caught.value.status_code == 503, "the primary's own error, not an auth failure on the spare"
    assert _upstream_models(stack) == ["gpt-4o"]
