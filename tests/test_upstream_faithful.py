"""The scripted upstream is faithful: the official OpenAI and Anthropic SDKs talk to it as to the real APIs."""

from __future__ import annotations

import asyncio
import struct
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest
from pytest_aiohttp import AiohttpServer

from tests.upstream import ScriptedUpstream, anthropic_error, load_fixture, openai_error, start_upstream

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a place.",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}
CLAUDE_WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "Current weather for a place.",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}
REPO_ROOT = Path(__file__).parents[1]
ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}


@dataclass
class Served:
    """A running upstream and its base URL."""

    upstream: ScriptedUpstream
    url: str


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    upstream, runner, url = await start_upstream()
    try:
        yield Served(upstream, url)
    finally:
        await runner.cleanup()


@pytest.fixture
async def oai(served: Served) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(api_key="sk-test", base_url=f"{served.url}/v1", max_retries=0) as client:
        yield client


@pytest.fixture
async def claude(served: Served) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=served.url, max_retries=0) as client:
        yield client


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _sync_chat(url: str) -> openai.types.chat.ChatCompletion:
    with openai.OpenAI(api_key="sk-test", base_url=f"{url}/v1", max_retries=0) as client:
        return client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi there"}])


async def test_openai_sync_chat_and_recording(served: Served) -> None:
    completion = await asyncio.to_thread(_sync_chat, served.url)
    assert completion.choices[0].message.content == "Hello! You said: hi there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-4o-2024-08-06"
    assert completion.system_fingerprint == "fp_chitty01"
    assert completion.created == 1733000000
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2 + 3, 5)
    [recorded] = served.upstream.requests
    assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
    assert recorded.headers["authorization"] == "Bearer sk-test"
    assert recorded.json == {"messages": [{"role": "user", "content": "hi there"}], "model": "gpt-4o"}
    assert orjson.loads(recorded.raw) == recorded.json


async def test_openai_async_chat_is_rendered_like_openai(oai: openai.AsyncOpenAI) -> None:
    raw = await oai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["content-type"] == "application/json"
    body = raw.content
    assert body.startswith(b'{\n  "id": "chatcmpl-')
    parsed = orjson.loads(body)
    assert list(parsed) == [
        *("id", "object", "created", "model", "choices", "usage", "service_tier", "system_fingerprint")
    ]
    assert list(parsed["choices"][0]) == ["index", "message", "logprobs", "finish_reason"]
    assert list(parsed["choices"][0]["message"]) == ["role", "content", "refusal", "annotations"]
    assert list(parsed["usage"]["completion_tokens_details"]) == [
        *("reasoning_tokens", "audio_tokens", "accepted_prediction_tokens", "rejected_prediction_tokens")
    ]
    completion = raw.parse()
    assert completion.model == "gpt-4o-mini"
    assert completion.service_tier == "default"
    assert len(completion.id) == len("chatcmpl-") + 24


async def test_identical_requests_get_identical_bytes(served: Served, http: aiohttp.ClientSession) -> None:
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "same"}], "stream": True}
    bodies = []
    for _ in range(2):
        async with http.post(
            f"{served.url}/v1/chat/completions", json=request, headers={"Authorization": "Bearer k"}
        ) as r:
            bodies.append(await r.read())
    assert bodies[0] == bodies[1]


async def test_openai_stream_with_usage(oai: openai.AsyncOpenAI, served: Served) -> None:
    stream = await oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello! You said: stream me"
    assert [c.choices[0].delta.content for c in chunks[1:4]] == ["Hello!", " You", " said:"]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (2 + 2 + 6, 5)
    assert served.upstream.requests[-1].json["stream"] is True


async def test_openai_stream_frames_are_byte_exact(served: Served, http: aiohttp.ClientSession) -> None:
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": True}
    async with http.post(f"{served.url}/v1/chat/completions", json=request, headers={"Authorization": "Bearer k"}) as r:
        assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
        body = await r.read()
    frames = body.split(b"\n\n")
    assert frames[-2:] == [b"data: [DONE]", b""]
    chunk_id = orjson.loads(frames[0].removeprefix(b"data: "))["id"]
    head = (
        f'data: {{"id":"{chunk_id}","object":"chat.completion.chunk","created":1733000000,'
        '"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_chitty01","choices":'
    ).encode()
    role = b'{"role":"assistant","content":"","refusal":null}'
    assert frames[0] == head + b'[{"index":0,"delta":' + role + b',"logprobs":null,"finish_reason":null}]}'
    assert frames[1] == head + b'[{"index":0,"delta":{"content":"Hello!"},"logprobs":null,"finish_reason":null}]}'
    assert frames[-3] == head + b'[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}'


async def test_openai_streamed_tool_call_reassembles(oai: openai.AsyncOpenAI) -> None:
    async with oai.chat.completions.stream(
        model="gpt-4o", messages=[{"role": "user", "content": "What's the weather?"}], tools=[WEATHER_TOOL]
    ) as stream:
        completion = await stream.get_final_completion()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"location": "Paris"}


async def test_openai_tool_round_trip_choices_and_logprobs(oai: openai.AsyncOpenAI) -> None:
    forced = await oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hello"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    [call] = forced.choices[0].message.tool_calls or []
    assert call.type == "function"
    assert call.function.arguments == '{"location": "Paris"}'
    replayed_call: Any = {"id": call.id, "type": "function", "function": call.function.model_dump()}
    answered = await oai.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [replayed_call]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
        ],
        tools=[WEATHER_TOOL],
    )
    assert answered.choices[0].message.content == "The tool said: sunny, 21C"
    several = await oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "a b c d"}], n=2, logprobs=True, max_tokens=3
    )
    assert [c.index for c in several.choices] == [0, 1]
    assert several.choices[1].message.content == "Hello! You said:"
    assert several.choices[1].finish_reason == "length"
    logprobs = several.choices[0].logprobs
    assert logprobs is not None
    assert [t.token for t in logprobs.content or []] == ["Hello!", " You", " said:"]
    assert several.usage is not None
    assert several.usage.completion_tokens == 6


async def test_openai_image_parts_are_counted(oai: openai.AsyncOpenAI) -> None:
    completion = await oai.chat.completions.create(
        model="gpt-4o",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ],
            }
        ],
    )
    assert completion.choices[0].message.content == "Hello! You said: what is this"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 3 + 3 + 85


async def test_openai_embeddings_float_and_base64(oai: openai.AsyncOpenAI, served: Served) -> None:
    floats = await oai.embeddings.create(
        model="text-embedding-3-small", input=["alpha", "beta gamma"], encoding_format="float"
    )
    assert [d.index for d in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 1536
    assert floats.usage.prompt_tokens == 3
    explicit = await oai.embeddings.create(model="text-embedding-3-small", input="alpha", encoding_format="base64")
    assert isinstance(explicit.data[0].embedding, str)
    default = await oai.embeddings.create(model="text-embedding-3-small", input="alpha")
    assert served.upstream.requests[-1].json["encoding_format"] == "base64"  # the SDK asks for base64 itself
    decoded = default.data[0].embedding
    assert isinstance(decoded[0], float)
    as_float32 = struct.Struct("<1536f")
    assert as_float32.pack(*decoded) == as_float32.pack(*floats.data[0].embedding)
    assert abs(sum(v * v for v in decoded) - 1.0) < 1e-4
    small = await oai.embeddings.create(
        model="text-embedding-3-small", input=[[1, 2, 3]], dimensions=4, encoding_format="float"
    )
    assert len(small.data[0].embedding) == 4
    assert small.usage.total_tokens == 3


async def test_openai_models(oai: openai.AsyncOpenAI) -> None:
    names = [model.id async for model in oai.models.list()]
    assert "gpt-4o" in names
    model = await oai.models.retrieve("gpt-4o")
    assert (model.object, model.owned_by) == ("model", "system")
    with pytest.raises(openai.NotFoundError):
        await oai.models.retrieve("gpt-nope")


async def test_openai_errors(oai: openai.AsyncOpenAI, served: Served) -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.AuthenticationError) as auth:
        await oai.with_options(api_key="sk-bad").chat.completions.create(model="gpt-4o", messages=messages)
    assert auth.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as missing:
        await oai.chat.completions.create(model="gpt-does-not-exist", messages=messages)
    assert missing.value.code == "model_not_found"
    served.upstream.script(status=429, body=load_fixture("openai/rate_limited.json"), headers={"retry-after": "1"})
    with pytest.raises(openai.RateLimitError) as limited:
        await oai.chat.completions.create(model="gpt-4o", messages=messages)
    assert limited.value.code == "rate_limit_exceeded"
    assert limited.value.response.headers["retry-after"] == "1"
    served.upstream.script(status=500)
    with pytest.raises(openai.InternalServerError) as failed:
        await oai.chat.completions.create(model="gpt-4o", messages=messages)
    assert failed.value.type == "server_error"


async def test_openai_missing_key_body_is_exact(served: Served, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{served.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": []}) as r:
        assert r.status == 401
        body = await r.read()
    assert body.startswith(b'{\n    "error": {\n        "message": "You didn\'t provide an API key.')
    assert orjson.loads(body)["error"] | {"message": ""} == {
        "message": "",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert orjson.loads(openai_error("m", "t", "p", "c")) == {
        "error": {"message": "m", "type": "t", "param": "p", "code": "c"}
    }


async def test_openai_fixture_replays(oai: openai.AsyncOpenAI, served: Served) -> None:
    served.upstream.script(body=load_fixture("openai/chat_stream_tools.sse"))
    async with oai.chat.completions.stream(
        model="gpt-4o", messages=[{"role": "user", "content": "weather in Paris and Tokyo"}], tools=[WEATHER_TOOL]
    ) as stream:
        completion = await stream.get_final_completion()
    calls = completion.choices[0].message.tool_calls or []
    assert [orjson.loads(c.function.arguments)["location"] for c in calls] == ["Paris, France", "Tokyo, Japan"]
    served.upstream.script(body=load_fixture("openai/chat_stream_error.sse"))
    stream_with_error = await oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "story"}], stream=True
    )
    with pytest.raises(openai.APIError, match="The server had an error"):
        await _drain(stream_with_error)


async def _drain(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


async def test_scripts_match_model_and_count(oai: openai.AsyncOpenAI, served: Served) -> None:
    served.upstream.script(model="gpt-4o-mini", status=503, times=2)
    messages: Any = [{"role": "user", "content": "hi"}]
    ok = await oai.chat.completions.create(model="gpt-4o", messages=messages)
    assert ok.choices[0].message.content == "Hello! You said: hi"
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await oai.chat.completions.create(model="gpt-4o-mini", messages=messages)
    again = await oai.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert again.model == "gpt-4o-mini"
    served.upstream.script(headers={"x-extra": "1"})
    extra = await oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
    assert extra.headers["x-extra"] == "1"
    assert len(served.upstream.requests) == 5
    served.upstream.reset()
    assert served.upstream.requests == []


async def test_delay_trips_client_timeout(oai: openai.AsyncOpenAI, served: Served) -> None:
    served.upstream.script(delay=30)
    with pytest.raises(openai.APITimeoutError):
        await oai.with_options(timeout=0.2).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )


async def test_hang_then_client_close_sets_stream_closed(oai: openai.AsyncOpenAI, served: Served) -> None:
    served.upstream.script(hang_after_chunks=2)
    stream = await oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x y"}], stream=True
    )
    first = await anext(aiter(stream))
    second = await anext(aiter(stream))
    assert (first.choices[0].delta.role, second.choices[0].delta.content) == ("assistant", "Hello!")
    assert not served.upstream.stream_closed.is_set()
    await stream.close()
    await asyncio.wait_for(served.upstream.stream_closed.wait(), timeout=5)


async def test_fail_after_chunks_breaks_the_stream(oai: openai.AsyncOpenAI, served: Served) -> None:
    served.upstream.script(fail_after_chunks=3)
    stream = await oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x y"}], stream=True
    )
    with pytest.raises(openai.APIConnectionError):
        await _drain(stream)


async def test_anthropic_text_and_tools(claude: anthropic.AsyncAnthropic, served: Served) -> None:
    message = await claude.messages.create(
        model="claude-sonnet-4-20250514",
        max_tokens=64,
        system="be nice",
        messages=[{"role": "user", "content": "hi you"}],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello! You said: hi you"
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (2 + 3 + 2, 5)
    recorded = served.upstream.requests[-1]
    assert recorded.path == "/v1/messages"
    # Anthropic SDK 2.x sends the key as a bearer token; older ones send x-api-key. The upstream takes both.
    assert (
        recorded.headers.get("x-api-key") or recorded.headers["authorization"].removeprefix("Bearer ")
    ) == "sk-ant-test"
    assert "anthropic-version" in recorded.headers
    forced = await claude.messages.create(
        model="claude-sonnet-4-20250514",
        max_tokens=64,
        messages=[{"role": "user", "content": "hello"}],
        tools=[CLAUDE_WEATHER_TOOL],
        tool_choice={"type": "any"},
    )
    [tool_use] = forced.content
    assert tool_use.type == "tool_use"
    assert (tool_use.name, tool_use.input, forced.stop_reason) == ("get_weather", {"location": "Paris"}, "tool_use")
    replayed_use: Any = {"type": "tool_use", "id": tool_use.id, "name": tool_use.name, "input": tool_use.input}
    answered = await claude.messages.create(
        model="claude-sonnet-4-20250514",
        max_tokens=64,
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [replayed_use]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny"}]},
        ],
        tools=[CLAUDE_WEATHER_TOOL],
    )
    assert answered.content[0].type == "text"
    assert answered.content[0].text == "The tool said: sunny"


async def test_anthropic_image_and_truncation(claude: anthropic.AsyncAnthropic) -> None:
    image: Any = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    message = await claude.messages.create(
        model="claude-sonnet-4-20250514",
        max_tokens=2,
        messages=[{"role": "user", "content": [image, {"type": "text", "text": "what is it"}]}],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello! You"
    assert message.stop_reason == "max_tokens"
    assert message.usage.input_tokens == 3 + 3 + 85


async def test_anthropic_stream_reassembles_text_and_tool_input(claude: anthropic.AsyncAnthropic) -> None:
    async with claude.messages.stream(
        model="claude-sonnet-4-20250514", max_tokens=64, messages=[{"role": "user", "content": "streaming please"}]
    ) as stream:
        texts = [text async for text in stream.text_stream]
        message = await stream.get_final_message()
    assert texts == ["Hello!", " You", " said:", " streaming", " please"]
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello! You said: streaming please"
    assert message.usage.output_tokens == 5
    async with claude.messages.stream(
        model="claude-sonnet-4-20250514",
        max_tokens=64,
        messages=[{"role": "user", "content": "what's the weather in Paris"}],
        tools=[CLAUDE_WEATHER_TOOL],
    ) as stream:
        message = await stream.get_final_message()
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.content[1].type == "tool_use"
    assert message.content[1].input == {"location": "Paris"}
    assert message.stop_reason == "tool_use"


async def test_anthropic_stream_wire_format(served: Served, http: aiohttp.ClientSession) -> None:
    request = {"model": "claude-x", "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": "yo"}]}
    async with http.post(f"{served.url}/v1/messages", json=request, headers=ANTHROPIC_HEADERS) as r:
        assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
        body = await r.read()
    events = [frame.split(b"\n")[0].removeprefix(b"event: ") for frame in body.split(b"\n\n") if frame]
    assert events[:3] == [b"message_start", b"content_block_start", b"ping"]
    assert events[-4:] == [b"content_block_delta", b"content_block_stop", b"message_delta", b"message_stop"]
    assert b'event: ping\ndata: {"type": "ping"}\n\n' in body
    assert (
        b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
        b'"usage":{"output_tokens":4}}\n\n' in body
    )


async def test_anthropic_fixture_replays(claude: anthropic.AsyncAnthropic, served: Served) -> None:
    served.upstream.script(body=load_fixture("anthropic/stream_tool_use.sse"))
    async with claude.messages.stream(
        model="claude-sonnet-4-20250514", max_tokens=64, messages=[{"role": "user", "content": "weather"}]
    ) as stream:
        message = await stream.get_final_message()
    assert message.content[1].type == "tool_use"
    assert message.content[1].input == {"location": "Paris, France", "unit": "celsius"}
    assert message.usage.output_tokens == 89
    served.upstream.script(body=load_fixture("anthropic/stream_overloaded.sse"))
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        await _final_message(claude)


async def _final_message(claude: anthropic.AsyncAnthropic) -> anthropic.types.Message:
    async with claude.messages.stream(
        model="claude-sonnet-4-20250514", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        return await stream.get_final_message()


async def test_anthropic_errors(claude: anthropic.AsyncAnthropic, served: Served) -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    served.upstream.script(status=429, body=load_fixture("anthropic/rate_limited.json"), headers={"retry-after": "7"})
    with pytest.raises(anthropic.RateLimitError) as limited:
        await claude.messages.create(model="claude-sonnet-4-20250514", max_tokens=8, messages=messages)
    assert limited.value.status_code == 429
    served.upstream.script(status=529, body=anthropic_error("overloaded_error", "Overloaded"))
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        await claude.messages.create(model="claude-sonnet-4-20250514", max_tokens=8, messages=messages)
    assert overloaded.value.status_code == 529
    assert overloaded.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    served.upstream.script(status=500)
    with pytest.raises(anthropic.InternalServerError) as failed:
        await claude.messages.create(model="claude-sonnet-4-20250514", max_tokens=8, messages=messages)
    assert failed.value.body == {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}
    with pytest.raises(anthropic.AuthenticationError):
        await claude.with_options(api_key="sk-bad").messages.create(model="claude-x", max_tokens=8, messages=messages)
    with pytest.raises(anthropic.NotFoundError):
        await claude.messages.create(model="claude-does-not-exist", max_tokens=8, messages=messages)


@pytest.mark.parametrize(
    ("headers", "body", "status", "error"),
    [
        ({}, {}, 401, ("authentication_error", "x-api-key header is required")),
        ({"x-api-key": "k"}, {}, 400, ("invalid_request_error", "anthropic-version: header is required")),
        (
            ANTHROPIC_HEADERS,
            {"model": "m", "messages": []},
            400,
            ("invalid_request_error", "max_tokens: Field required"),
        ),
        (
            ANTHROPIC_HEADERS,
            {"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": "x"}]},
            400,
            ("invalid_request_error", 'messages: first message must use the "user" role'),
        ),
        (
            ANTHROPIC_HEADERS,
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            },
            400,
            (
                "invalid_request_error",
                'messages: roles must alternate between "user" and "assistant", '
                'but found multiple "user" roles in a row',
            ),
        ),
    ],
)
async def test_anthropic_validation(
    served: Served,
    http: aiohttp.ClientSession,
    headers: dict[str, str],
    body: dict[str, Any],
    status: int,
    error: tuple[str, str],
) -> None:
    async with http.post(f"{served.url}/v1/messages", json=body, headers=headers) as r:
        assert r.status == status
        assert await r.read() == anthropic_error(*error)


async def test_standalone_process_prints_ready(http: aiohttp.ClientSession) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.upstream", "--port", "0", cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
        word, port = line.decode().split()
        assert word == "READY"
        async with http.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": "Bearer k"}) as r:
            assert r.status == 200
            assert (await r.json())["object"] == "list"
    finally:
        proc.terminate()
        assert await proc.wait() == 0


async def test_serves_under_pytest_aiohttp(aiohttp_server: AiohttpServer, http: aiohttp.ClientSession) -> None:
    upstream = ScriptedUpstream()
    server = await aiohttp_server(upstream.app)
    upstream.script(hang_after_chunks=3)
    request = {"model": "claude-x", "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": "yo"}]}
    async with http.post(str(server.make_url("/v1/messages")), json=request, headers=ANTHROPIC_HEADERS) as r:
        frames = [await r.content.readuntil(b"\n\n") for _ in range(3)]
    assert frames[2] == b'event: ping\ndata: {"type": "ping"}\n\n'
    await asyncio.wait_for(upstream.stream_closed.wait(), timeout=5)
    assert [req.path for req in upstream.requests] == ["/v1/messages"]


async def test_cleanup_releases_a_hung_stream(http: aiohttp.ClientSession) -> None:
    upstream, runner, url = await start_upstream()
    try:
        upstream.script(hang_after_chunks=1)
        request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": True}
        async with http.post(f"{url}/v1/chat/completions", json=request, headers={"Authorization": "Bearer k"}) as r:
            assert (await r.content.readuntil(b"\n\n")).startswith(b'data: {"id":"chatcmpl-')
            await asyncio.wait_for(runner.cleanup(), timeout=5)
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()
    finally:
        await runner.cleanup()
    assert not upstream.stream_closed.is_set()
