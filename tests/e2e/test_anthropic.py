"""The official OpenAI SDK through the gateway to the scripted Anthropic upstream (and Groq's OpenAI dialect)."""

import base64
import json
from typing import Any

import openai
import pytest

from engine.providers.anthropic import ANTHROPIC_VERSION
from engine.providers.anthropic_translate import DEFAULT_MAX_TOKENS
from engine.providers.rate_limits import go_duration_micros
from tests import rawhttp
from tests.e2e.test_chat import WEATHER_TOOL
from tests.stack import API_KEY, Stack
from tests.upstream import anthropic_error, load_fixture

CLAUDE = "claude-sonnet-4"
CLAUDE_UPSTREAM = "claude-sonnet-4-20250514"
HELLO = [{"role": "user", "content": "hello there"}]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake pixels").decode()


def _messages(stack: Stack) -> list[Any]:
    return stack.upstream_requests("/v1/messages")


def _collect_tool_calls(chunks: list[Any]) -> dict[int, dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                if delta.id:
                    assert not call["id"], "the id comes only on a call's first delta"
                    call["id"] = delta.id
                if delta.function and delta.function.name:
                    call["name"] += delta.function.name
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
    return calls


def test_text_completion_and_what_anthropic_received(client: openai.OpenAI, stack: Stack) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=CLAUDE,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "hello there"},
        ],
        temperature=0.3,
        top_p=0.8,
        stop=["END", "\n\n"],
        user="u-42",
    )
    res = raw.parse()
    assert raw.headers["x-chittycan-model"] == CLAUDE
    assert res.object == "chat.completion"
    assert res.id.startswith("chatcmpl-msg_01")
    assert res.model == CLAUDE_UPSTREAM
    assert res.choices[0].message.role == "assistant"
    assert res.choices[0].message.content == "Hello! You said: hello there"
    assert res.choices[0].finish_reason == "stop"
    assert res.usage is not None
    assert res.usage.completion_tokens == 5
    assert res.usage.total_tokens == res.usage.prompt_tokens + res.usage.completion_tokens

    [sent] = _messages(stack)
    assert sent.headers["x-api-key"] == API_KEY, "the pass-through key goes to Anthropic as x-api-key"
    assert "authorization" not in sent.headers
    assert sent.headers["anthropic-version"] == ANTHROPIC_VERSION
    assert sent.json == {
        "model": CLAUDE_UPSTREAM,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Answer in English."}],
        "temperature": 0.3,
        "top_p": 0.8,
        "stop_sequences": ["END", "\n\n"],
        "metadata": {"user_id": "u-42"},
    }


def test_single_system_prompt_is_a_string_and_max_tokens_is_kept(client: openai.OpenAI, stack: Stack) -> None:
    client.chat.completions.create(
        model=CLAUDE, messages=[{"role": "system", "content": "Be brief."}, *HELLO], max_tokens=7, stop="END"
    )
    body = _messages(stack)[-1].json
    assert body["system"] == "Be brief."
    assert body["max_tokens"] == 7
    assert body["stop_sequences"] == ["END"]
    client.chat.completions.create(model=CLAUDE, messages=HELLO, max_completion_tokens=9)
    assert _messages(stack)[-1].json["max_tokens"] == 9


def test_max_tokens_reached_is_length(client: openai.OpenAI) -> None:
    res = client.chat.completions.create(model=CLAUDE, messages=HELLO, max_tokens=2)
    assert res.choices[0].finish_reason == "length"
    assert res.choices[0].message.content == "Hello! You"


def test_stream_has_role_first_finish_and_usage(client: openai.OpenAI, stack: Stack) -> None:
    chunks = list(
        client.chat.completions.create(
            model=CLAUDE, messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].id.startswith("chatcmpl-msg_01")
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "Hello! You said: hello there"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].usage.prompt_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    assert _messages(stack)[-1].json["stream"] is True


def test_stream_without_include_usage_sends_no_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=CLAUDE, messages=HELLO, stream=True))
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks), "the usage-only chunk is dropped when usage was not asked for"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_tool_call_non_stream(client: openai.OpenAI, stack: Stack) -> None:
    res = client.chat.completions.create(
        model=CLAUDE, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL]
    )
    choice = res.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll check that for you."
    [call] = choice.message.tool_calls or []
    assert call.id.startswith("toolu_01")
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}
    body = _messages(stack)[-1].json
    function = WEATHER_TOOL["function"]
    assert body["tools"] == [
        {"name": "get_weather", "description": function["description"], "input_schema": function["parameters"]}
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("required", {"type": "any"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
    ],
)
def test_forced_tool_choice(client: openai.OpenAI, stack: Stack, tool_choice: Any, expected: Any) -> None:
    res = client.chat.completions.create(
        model=CLAUDE, messages=[{"role": "user", "content": "Hi"}], tools=[WEATHER_TOOL], tool_choice=tool_choice
    )
    assert res.choices[0].finish_reason == "tool_calls"
    assert res.choices[0].message.content is None
    assert _messages(stack)[-1].json["tool_choice"] == expected


def test_tool_call_streamed_with_stable_indexes(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=CLAUDE,
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[WEATHER_TOOL],
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "I'll check that for you."
    calls = _collect_tool_calls(chunks)
    assert list(calls) == [0]
    assert calls[0]["id"].startswith("toolu_01")
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"location": "Paris"}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]


def _event(data: dict[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


def _two_tool_stream() -> bytes:
    """Text, then two tool_use blocks whose input arrives in fragments, as Claude streams parallel tool calls."""
    start = {"id": "msg_01TwoTools", "type": "message", "role": "assistant", "model": CLAUDE_UPSTREAM, "content": []}
    start |= {"stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 40, "output_tokens": 1}}
    events = [{"type": "message_start", "message": start}]
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
        ({"type": "text", "text": ""}, [{"type": "text_delta", "text": "Checking both."}]),
    ]
    for i, city in enumerate(("Paris", "Tokyo")):
        fragments = ["", '{"loca', f'tion": "{city}"}}']
        tool = {"type": "tool_use", "id": f"toolu_0{i}", "name": "get_weather", "input": {}}
        blocks.append((tool, [{"type": "input_json_delta", "partial_json": f} for f in fragments]))
    for index, (block, deltas) in enumerate(blocks):
        events.append({"type": "content_block_start", "index": index, "content_block": block})
        events += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": index})
    delta = {"stop_reason": "tool_use", "stop_sequence": None}
    events += [{"type": "message_delta", "delta": delta, "usage": {"output_tokens": 30}}, {"type": "message_stop"}]
    return b"".join(_event(e) for e in events)


def test_two_streamed_tool_calls_keep_their_indexes(client: openai.OpenAI, stack: Stack) -> None:
    stack.call(lambda: stack.upstream.script(body=_two_tool_stream()))
    chunks = list(
        client.chat.completions.create(
            model=CLAUDE, messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER_TOOL], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Checking both."
    calls = _collect_tool_calls(chunks)
    assert calls == {
        0: {"id": "toolu_00", "name": "get_weather", "arguments": '{"location": "Paris"}'},
        1: {"id": "toolu_01", "name": "get_weather", "arguments": '{"location": "Tokyo"}'},
    }
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]


def test_prompt_cache_tokens_are_cached_tokens_and_billed(client: openai.OpenAI, stack: Stack) -> None:
    message = json.loads(load_fixture("anthropic/message.json"))
    message["usage"] = {
        "input_tokens": 10,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 20,
        "output_tokens": 5,
    }
    stack.call(lambda: stack.upstream.script(body=json.dumps(message).encode()))
    raw = client.chat.completions.with_raw_response.create(model=CLAUDE, messages=HELLO)
    usage = raw.parse().usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (130, 5, 135)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 100
    # 10 x $3 + 100 x $0.30 + 20 x $3.75 + 5 x $15 per million tokens = 210 micro-USD.
    assert raw.headers["x-chittycan-cost"] == "0.000210"


def test_multi_turn_with_tool_results(client: openai.OpenAI, stack: Stack) -> None:
    first = client.chat.completions.create(
        model=CLAUDE, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL]
    )
    message = first.choices[0].message
    assert message.tool_calls
    call_id = message.tool_calls[0].id
    second = client.chat.completions.create(
        model=CLAUDE,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call_id, "content": "18C and sunny"},
            {"role": "user", "content": "Thanks."},
        ],
        tools=[WEATHER_TOOL],
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "The tool said: 18C and sunny"
    turns = _messages(stack)[-1].json["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"], "tool result and user text are merged"
    assert turns[1]["content"] == [
        {"type": "text", "text": "I'll check that for you."},
        {"type": "tool_use", "id": call_id, "name": "get_weather", "input": {"location": "Paris"}},
    ]
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": call_id, "content": "18C and sunny"},
        {"type": "text", "text": "Thanks."},
    ]


def test_images_reach_anthropic_as_image_blocks(client: openai.OpenAI, stack: Stack) -> None:
    res = client.chat.completions.create(
        model=CLAUDE,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare these"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
                ],
            }
        ],
    )
    assert res.choices[0].message.content == "Hello! You said: Compare these"
    blocks = _messages(stack)[-1].json["messages"][0]["content"]
    assert blocks == [
        {"type": "text", "text": "Compare these"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_unsupported_parameters_are_400_naming_them(
    client: openai.OpenAI, stack: Stack, kwargs: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=CLAUDE, messages=HELLO, **kwargs)
    assert caught.value.param == param
    assert caught.value.status_code == 400
    assert _messages(stack) == [], "refused before anything is sent upstream"


def test_unsupported_parameter_in_a_stream_is_400(client: openai.OpenAI, stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=CLAUDE, messages=HELLO, n=2, stream=True)
    assert caught.value.param == "n"
    assert _messages(stack) == []


def test_rate_limit_is_rate_limit_error(client: openai.OpenAI, stack: Stack) -> None:
    limits = {"retry-after": "60", "anthropic-ratelimit-tokens-remaining": "0"}
    stack.call(lambda: stack.upstream.script(status=429, headers=limits, times=3))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=CLAUDE, messages=HELLO)
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "60"
    assert caught.value.response.headers["x-ratelimit-remaining-tokens"] == "0", "Anthropic's, as OpenAI's header"
    assert len(_messages(stack)) == 1, "a retry-after beyond retry_after_max is not waited for"


def test_overloaded_529_is_503(client: openai.OpenAI, stack: Stack) -> None:
    stack.call(lambda: stack.upstream.script(status=529, body=load_fixture("anthropic/overloaded.json"), times=2))
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=CLAUDE, messages=HELLO)
    assert caught.value.status_code == 503
    assert caught.value.code == "overloaded"
    assert caught.value.body["message"] == "Overloaded"
    assert len(_messages(stack)) == 2, "overloaded is retried (retry.attempts = 2)"


def test_overloaded_then_success_is_retried(client: openai.OpenAI, stack: Stack) -> None:
    stack.call(lambda: stack.upstream.script(status=529))
    res = client.chat.completions.create(model=CLAUDE, messages=HELLO)
    assert res.choices[0].message.content == "Hello! You said: hello there"
    assert len(_messages(stack)) == 2


def test_anthropic_400_is_bad_request_with_its_message(client: openai.OpenAI, stack: Stack) -> None:
    body = anthropic_error("invalid_request_error", "messages.0.content: text content blocks must be non-empty")
    stack.call(lambda: stack.upstream.script(status=400, body=body))
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=CLAUDE, messages=HELLO)
    assert caught.value.body["message"] == "messages.0.content: text content blocks must be non-empty"
    assert caught.value.type == "invalid_request_error"
    assert len(_messages(stack)) == 1, "a 400 is never retried"


def test_prompt_too_long_is_bad_request(client: openai.OpenAI, stack: Stack) -> None:
    stack.call(lambda: stack.upstream.script(status=400, body=load_fixture("anthropic/prompt_too_long.json")))
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=CLAUDE, messages=HELLO, stream=True)
    assert "prompt is too long" in caught.value.message


def test_passthrough_key_rejected_is_authentication_error(stack: Stack) -> None:
    with (
        openai.OpenAI(api_key="sk-bad", base_url=stack.base_url, max_retries=0) as sdk,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        sdk.chat.completions.create(model=CLAUDE, messages=HELLO)
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert caught.value.body["message"] == "invalid x-api-key"
    assert _messages(stack)[-1].headers["x-api-key"] == "sk-bad"


def test_error_event_mid_stream_raises_during_iteration(client: openai.OpenAI, stack: Stack) -> None:
    stack.call(lambda: stack.upstream.script(body=load_fixture("anthropic/stream_overloaded.sse")))
    stream = client.chat.completions.create(model=CLAUDE, messages=HELLO, stream=True)
    received: list[Any] = []
    with pytest.raises(openai.APIError) as caught:
        received.extend(stream)  # list.extend keeps what arrived before the error
    assert received, "chunks before the error reach the client"
    assert received[0].choices[0].delta.role == "assistant"
    assert "Overloaded" in caught.value.message
    assert len(_messages(stack)) == 1, "never retried once streaming started"


def test_in_band_error_frame_is_openai_shaped(stack: Stack) -> None:
    stack.call(lambda: stack.upstream.script(body=load_fixture("anthropic/stream_overloaded.sse")))
    response = rawhttp.post(
        f"{stack.base_url}/chat/completions",
        json={"model": CLAUDE, "messages": HELLO, "stream": True},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 200
    frames = [f for f in response.text.split("\n\n") if f.startswith("data: ")]
    assert frames[-1] != "data: [DONE]"
    error = json.loads(frames[-1].removeprefix("data: "))["error"]
    assert (error["type"], error["code"], error["message"]) == ("server_error", "overloaded", "Overloaded")


def test_anthropic_rate_limits_become_openai_headers(client: openai.OpenAI) -> None:
    for stream in (False, True):
        raw = client.chat.completions.with_raw_response.create(model=CLAUDE, messages=HELLO, stream=stream)
        limits = {k: v for k, v in raw.headers.items() if k.startswith("x-ratelimit-")}
        assert set(limits) == {
            f"x-ratelimit-{name}-{kind}" for name in ("limit", "remaining", "reset") for kind in ("requests", "tokens")
        }
        assert (limits["x-ratelimit-limit-requests"], limits["x-ratelimit-remaining-requests"]) == ("4000", "3999")
        assert (limits["x-ratelimit-limit-tokens"], limits["x-ratelimit-remaining-tokens"]) == ("800000", "799950")
        # Anthropic gives the time of the reset (RFC 3339, whole seconds); OpenAI's header is the time left.
        assert 0 <= go_duration_micros(limits["x-ratelimit-reset-requests"]) <= 1_000_000
        assert 58_000_000 <= go_duration_micros(limits["x-ratelimit-reset-tokens"]) <= 60_000_000
        raw.parse()


def test_a_messages_answer_of_the_wrong_shape_is_503(client: openai.OpenAI, stack: Stack) -> None:
    stack.call(lambda: stack.upstream.script(body=b'{"type": "message", "content": "nope"}', times=2))
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=CLAUDE, messages=HELLO)
    assert caught.value.status_code == 503
    assert caught.value.body["message"] == "The anthropic upstream sent a malformed answer."  # type: ignore[index]


def test_llama_routes_to_groq(client: openai.OpenAI, stack: Stack) -> None:
    raw = client.chat.completions.with_raw_response.create(model="llama-3-70b", messages=HELLO)
    res = raw.parse()
    assert raw.headers["x-chittycan-model"] == "llama-3-70b"
    assert res.choices[0].message.content == "Hello! You said: hello there"
    assert res.model == "llama3-70b-8192"
    [sent] = stack.upstream_requests("/v1/chat/completions")
    assert sent.json["model"] == "llama3-70b-8192"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert stack.settings.providers["groq"].base_url == f"{stack.upstream_url}/v1"
    chunks = list(client.chat.completions.create(model="llama-3-70b", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello! You said: hello there"


def test_models_lists_claude_and_llama(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert models[CLAUDE].owned_by == "anthropic"
    assert models["llama-3-70b"].owned_by == "groq"
    assert models["gpt-4o"].owned_by == "openai"
    assert client.models.retrieve("claude-3-5-haiku-latest").owned_by == "anthropic", "pattern routes resolve"
