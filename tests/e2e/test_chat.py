"""Chat completions through the gateway with the official OpenAI SDK (sync and async), JSON and streamed."""

import json

import openai
import pytest

from tests.stack import API_KEY, Stack

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["location"],
        },
    },
}


def test_non_stream_completion_has_openai_shape(client: openai.OpenAI) -> None:
    res = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Say hello in 3 words."}], temperature=0
    )
    assert res.id.startswith("chatcmpl-")
    assert res.object == "chat.completion"
    assert res.created > 0
    assert res.model == "gpt-4o-2024-08-06"
    assert len(res.choices) == 1
    assert res.choices[0].message.role == "assistant"
    assert "hello" in (res.choices[0].message.content or "").lower()
    assert res.choices[0].finish_reason == "stop"
    assert res.usage is not None
    assert res.usage.prompt_tokens > 0
    assert res.usage.completion_tokens > 0
    assert res.usage.total_tokens == res.usage.prompt_tokens + res.usage.completion_tokens


def test_parameters_reach_the_upstream_unchanged(client: openai.OpenAI, stack: Stack) -> None:
    client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hi"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
                ],
            },
        ],
        temperature=0.5,
        max_tokens=50,
        top_p=0.9,
        frequency_penalty=0.1,
        presence_penalty=0.1,
        seed=7,
        stop=["\n\n", "END"],
        logit_bias={"50256": -100},
        user="u-1",
        metadata={"team": "a"},
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        parallel_tool_calls=False,
        response_format={"type": "text"},
        n=1,
        extra_body={"prediction": {"type": "content", "content": "Hello"}, "verbosity": "low"},
    )
    sent = stack.upstream_requests("/v1/chat/completions")[-1]
    body = sent.json
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert body["temperature"] == 0.5
    assert body["max_tokens"] == 50
    assert body["top_p"] == 0.9
    assert body["frequency_penalty"] == 0.1
    assert body["presence_penalty"] == 0.1
    assert body["seed"] == 7
    assert body["stop"] == ["\n\n", "END"]
    assert body["logit_bias"] == {"50256": -100}
    assert body["user"] == "u-1"
    assert body["metadata"] == {"team": "a"}
    assert body["tools"] == [WEATHER_TOOL]
    assert list(body["tools"][0]["function"]["parameters"]["properties"]) == ["location", "unit"]
    assert body["tool_choice"] == "auto"
    assert body["parallel_tool_calls"] is False
    assert body["response_format"] == {"type": "text"}
    assert body["prediction"] == {"type": "content", "content": "Hello"}
    assert body["verbosity"] == "low"
    assert body["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://example.com/cat.png", "detail": "low"},
    }
    assert "stream" not in body


def test_stream_reassembles_content_with_openai_framing(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Count to 3."}], stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "Hello! You said: Count to 3."
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks), "usage only when the client asks for it"


def test_stream_usage_chunk_when_asked(client: openai.OpenAI, stack: Stack) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Count to 3."}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert stack.upstream_requests("/v1/chat/completions")[-1].json["stream_options"] == {"include_usage": True}


def test_streamed_tool_calls_keep_stable_indexes(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or ():
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                if delta.id:
                    assert not call["id"], "id only on the first delta"
                    call["id"] = delta.id
                if delta.function and delta.function.name:
                    call["name"] = delta.function.name
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["id"].startswith("call_")
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"location": "Paris"}


def test_non_stream_tool_call_and_tool_result_turn(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
    )
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    assert message.tool_calls
    assert message.tool_calls[0].function.name == "get_weather"
    second = client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "18C and sunny"},
        ],
        tools=[WEATHER_TOOL],
    )
    assert second.choices[0].message.content == "The tool said: 18C and sunny"


async def test_async_sdk_stream_and_json(stack: Stack) -> None:
    async with openai.AsyncOpenAI(api_key=API_KEY, base_url=stack.base_url, max_retries=0) as sdk:
        res = await sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
        assert res.choices[0].message.content == "Hello! You said: Hi"
        stream = await sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi there"}], stream=True
        )
        content = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert content == "Hello! You said: Hi there"


def test_max_tokens_gives_length(client: openai.OpenAI) -> None:
    res = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "one two three four five"}], max_tokens=2
    )
    assert res.choices[0].finish_reason == "length"


@pytest.mark.parametrize("n", [2, 3])
def test_n_choices(client: openai.OpenAI, n: int) -> None:
    res = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], n=n)
    assert [c.index for c in res.choices] == list(range(n))
