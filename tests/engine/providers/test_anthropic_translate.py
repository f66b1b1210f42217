"""Table tests of the pure Anthropic translators: requests, responses, stream events and errors."""

from typing import Any

import grpc
import orjson
import pytest

from chittycan.v1 import completion_pb2, error_pb2
from engine import errors
from engine.errors import GatewayError
from engine.providers.anthropic_translate import (
    DEFAULT_MAX_TOKENS,
    StreamTranslator,
    error_from_event,
    error_from_response,
    messages_body_from_proto,
    response_from_anthropic,
)

MODEL = "claude-sonnet-4-20250514"
CREATED = 1733000000
ID = "chatcmpl-msg_01"
WEATHER_SCHEMA = b'{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}'

Msg = completion_pb2.Message


def system(text: str) -> completion_pb2.Message:
    return Msg(role=completion_pb2.ROLE_SYSTEM, text=text)


def user(text: str) -> completion_pb2.Message:
    return Msg(role=completion_pb2.ROLE_USER, text=text)


def assistant(text: str) -> completion_pb2.Message:
    return Msg(role=completion_pb2.ROLE_ASSISTANT, text=text)


def tool_result(call_id: str, text: str) -> completion_pb2.Message:
    return Msg(role=completion_pb2.ROLE_TOOL, tool_call_id=call_id, text=text)


def calls(*pairs: tuple[str, str]) -> completion_pb2.Message:
    """An assistant turn with content "" calling get_weather once per (id, arguments) pair, as OpenAI clients send."""
    tool_calls = [
        completion_pb2.ToolCall(
            id=call_id, type="function", function=completion_pb2.FunctionCall(name="get_weather", arguments=arguments)
        )
        for call_id, arguments in pairs
    ]
    return Msg(role=completion_pb2.ROLE_ASSISTANT, text="", tool_calls=tool_calls)


def parts(role: completion_pb2.Role.ValueType, *items: completion_pb2.ContentPart) -> completion_pb2.Message:
    return Msg(role=role, parts=completion_pb2.ContentParts(parts=items))


def text_part(text: str) -> completion_pb2.ContentPart:
    return completion_pb2.ContentPart(text=completion_pb2.TextPart(text=text))


def image_part(url: str) -> completion_pb2.ContentPart:
    return completion_pb2.ContentPart(image_url=completion_pb2.ImageUrlPart(url=url, detail="high"))


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def body_for(*messages: completion_pb2.Message, **fields: Any) -> dict[str, Any]:
    return messages_body_from_proto(completion_pb2.ChatRequest(messages=messages, **fields), MODEL, stream=False)


CONVERSATIONS = [
    pytest.param(
        [user("hi")],
        None,
        [{"role": "user", "content": [text_block("hi")]}],
        id="one-user-turn",
    ),
    pytest.param(
        [system("be brief"), user("hi")],
        "be brief",
        [{"role": "user", "content": [text_block("hi")]}],
        id="one-system-message-is-a-string",
    ),
    pytest.param(
        [system("a"), Msg(role=completion_pb2.ROLE_DEVELOPER, text="b"), user("hi"), system("c")],
        [text_block("a"), text_block("b"), text_block("c")],
        [{"role": "user", "content": [text_block("hi")]}],
        id="system-and-developer-hoisted-in-order",
    ),
    pytest.param(
        [parts(completion_pb2.ROLE_SYSTEM, text_part("x"), text_part("y")), user("hi")],
        [text_block("x"), text_block("y")],
        [{"role": "user", "content": [text_block("hi")]}],
        id="system-parts-become-blocks",
    ),
    pytest.param(
        [user("one"), user("two"), assistant("three"), assistant("four"), user("five")],
        None,
        [
            {"role": "user", "content": [text_block("one"), text_block("two")]},
            {"role": "assistant", "content": [text_block("three"), text_block("four")]},
            {"role": "user", "content": [text_block("five")]},
        ],
        id="consecutive-same-role-turns-merge",
    ),
    pytest.param(
        [
            user("weather?"),
            calls(("call_1", '{"city": "Paris"}'), ("call_2", "")),
            tool_result("call_1", "sunny"),
            Msg(
                role=completion_pb2.ROLE_TOOL,
                tool_call_id="call_2",
                parts=completion_pb2.ContentParts(parts=[text_part("rain")]),
            ),
            user("thanks"),
        ],
        None,
        [
            {"role": "user", "content": [text_block("weather?")]},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [text_block("rain")]},
                    text_block("thanks"),
                ],
            },
        ],
        id="tool-calls-and-results-merge-into-one-user-turn",
    ),
    pytest.param(
        [
            parts(
                completion_pb2.ROLE_USER,
                text_part("what is this?"),
                image_part("data:image/png;base64,iVBORw0KGgo="),
                image_part("https://example.com/cat.jpg"),
            )
        ],
        None,
        [
            {
                "role": "user",
                "content": [
                    text_block("what is this?"),
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                ],
            }
        ],
        id="images-data-uri-and-url",
    ),
    pytest.param(
        [user("hi"), Msg(role=completion_pb2.ROLE_ASSISTANT, refusal="I can't help with that.")],
        None,
        [
            {"role": "user", "content": [text_block("hi")]},
            {"role": "assistant", "content": [text_block("I can't help with that.")]},
        ],
        id="assistant-refusal-replayed-as-text",
    ),
]


@pytest.mark.parametrize(("messages", "expected_system", "expected_turns"), CONVERSATIONS)
def test_conversation_translates(
    messages: list[completion_pb2.Message], expected_system: Any, expected_turns: list[dict[str, Any]]
) -> None:
    body = body_for(*messages)
    assert body.get("system") == expected_system
    assert body["messages"] == expected_turns


def test_minimal_body_has_model_and_default_max_tokens() -> None:
    assert body_for(user("hi")) == {
        "model": MODEL,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": [text_block("hi")]}],
    }
    assert DEFAULT_MAX_TOKENS == 4096


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, DEFAULT_MAX_TOKENS, id="default"),
        pytest.param({"max_tokens": 50}, 50, id="max_tokens"),
        pytest.param({"max_completion_tokens": 70}, 70, id="max_completion_tokens"),
        pytest.param({"max_tokens": 50, "max_completion_tokens": 70}, 70, id="max_completion_tokens-wins"),
    ],
)
def test_max_tokens(fields: dict[str, Any], expected: int) -> None:
    assert body_for(user("hi"), **fields)["max_tokens"] == expected


def test_sampling_stop_user_and_stream() -> None:
    request = completion_pb2.ChatRequest(
        messages=[user("hi")], temperature=0.5, top_p=0.9, stop=["END"], stop_is_string=True, user="u-42"
    )
    body = messages_body_from_proto(request, MODEL, stream=True)
    assert body["temperature"] == 0.5
    assert body["top_p"] == 0.9
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "u-42"}
    assert body["stream"] is True
    assert "stream" not in messages_body_from_proto(request, MODEL, stream=False)


def test_documented_drops_are_not_forwarded() -> None:
    body = body_for(
        user("hi"),
        n=1,
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        logprobs=False,
        top_logprobs=0,
        store=True,
        service_tier="auto",
        reasoning_effort="low",
        metadata={"tag": "x"},
        modalities=["text"],
        response_format=completion_pb2.ResponseFormat(type=completion_pb2.RESPONSE_FORMAT_TYPE_TEXT),
        extra_json=b'{"prediction":{"type":"content","content":"x"}}',
    )
    assert set(body) == {"model", "max_tokens", "messages"}


def test_tools() -> None:
    tools = [
        completion_pb2.Tool(
            type="function", name="get_weather", description="Weather by city", parameters_json=WEATHER_SCHEMA
        ),
        completion_pb2.Tool(type="function", name="now", strict=True),
    ]
    assert body_for(user("hi"), tools=tools)["tools"] == [
        {"name": "get_weather", "description": "Weather by city", "input_schema": orjson.loads(WEATHER_SCHEMA)},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]


TOOL = completion_pb2.Tool(type="function", name="get_weather", parameters_json=WEATHER_SCHEMA)
MODE = completion_pb2.ToolChoice


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, None, id="not-given"),
        pytest.param({"tool_choice": MODE(mode=completion_pb2.TOOL_CHOICE_MODE_AUTO)}, {"type": "auto"}, id="auto"),
        pytest.param({"tool_choice": MODE(mode=completion_pb2.TOOL_CHOICE_MODE_REQUIRED)}, {"type": "any"}, id="req"),
        pytest.param({"tool_choice": MODE(mode=completion_pb2.TOOL_CHOICE_MODE_NONE)}, {"type": "none"}, id="none"),
        pytest.param(
            {"tool_choice": MODE(function_name="get_weather")}, {"type": "tool", "name": "get_weather"}, id="named"
        ),
        pytest.param(
            {"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}, id="serial-only"
        ),
        pytest.param(
            {"tool_choice": MODE(function_name="get_weather"), "parallel_tool_calls": False},
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
            id="named-serial",
        ),
        pytest.param(
            {"tool_choice": MODE(mode=completion_pb2.TOOL_CHOICE_MODE_NONE), "parallel_tool_calls": False},
            {"type": "none"},
            id="none-serial",
        ),
        pytest.param({"parallel_tool_calls": True}, None, id="parallel-is-the-default"),
    ],
)
def test_tool_choice(fields: dict[str, Any], expected: dict[str, Any] | None) -> None:
    assert body_for(user("hi"), tools=[TOOL], **fields).get("tool_choice") == expected


def audio_part() -> completion_pb2.ContentPart:
    return completion_pb2.ContentPart(input_audio=completion_pb2.InputAudioPart(data="AAAA", format="wav"))


def file_part() -> completion_pb2.ContentPart:
    return completion_pb2.ContentPart(file=completion_pb2.FilePart(file_id="file-1"))


FORMAT = completion_pb2.ResponseFormat
REJECTED = [
    pytest.param([user("hi")], {"n": 2}, "n", id="n"),
    pytest.param([user("hi")], {"logprobs": True}, "logprobs", id="logprobs"),
    pytest.param([user("hi")], {"top_logprobs": 3}, "top_logprobs", id="top_logprobs"),
    pytest.param([user("hi")], {"logit_bias": {"50256": -100.0}}, "logit_bias", id="logit_bias"),
    pytest.param(
        [user("hi")],
        {"response_format": FORMAT(type=completion_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT)},
        "response_format",
        id="json_object",
    ),
    pytest.param(
        [user("hi")],
        {"response_format": FORMAT(type=completion_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA)},
        "response_format",
        id="json_schema",
    ),
    pytest.param([user("hi")], {"modalities": ["text", "audio"]}, "modalities", id="audio-output"),
    pytest.param([parts(completion_pb2.ROLE_USER, audio_part())], {}, "messages", id="input_audio"),
    pytest.param([parts(completion_pb2.ROLE_USER, file_part())], {}, "messages", id="file"),
    pytest.param(
        [parts(completion_pb2.ROLE_SYSTEM, image_part("https://example.com/a.png")), user("hi")],
        {},
        "messages",
        id="image-in-system",
    ),
    pytest.param([parts(completion_pb2.ROLE_USER, image_part("ftp://x/a.png"))], {}, "messages", id="ftp-image"),
    pytest.param(
        [parts(completion_pb2.ROLE_USER, image_part("data:image/png,abc"))], {}, "messages", id="data-uri-not-base64"
    ),
    pytest.param(
        [user("hi"), calls(("call_1", '{"city": '))],
        {},
        "messages[1].tool_calls[0].function.arguments",
        id="invalid-arguments",
    ),
    pytest.param(
        [user("hi"), calls(("call_1", "[1, 2]"))],
        {},
        "messages[1].tool_calls[0].function.arguments",
        id="arguments-not-an-object",
    ),
    pytest.param(
        [user("hi"), Msg(role=completion_pb2.ROLE_TOOL, text="sunny")],
        {},
        "messages[1].tool_call_id",
        id="tool-message-without-id",
    ),
    pytest.param([Msg(role=completion_pb2.ROLE_FUNCTION, name="f", text="x")], {}, "messages", id="function-role"),
    pytest.param(
        [Msg(role=completion_pb2.ROLE_ASSISTANT, function_call=completion_pb2.FunctionCall(name="f"))],
        {},
        "messages",
        id="legacy-function_call",
    ),
    pytest.param(
        [user("hi")], {"tools": [completion_pb2.Tool(type="custom", name="grammar")]}, "tools[0]", id="custom-tool"
    ),
    pytest.param(
        [user("hi")],
        {"tool_choice": MODE(other_json=b'{"type":"allowed_tools"}')},
        "tool_choice",
        id="allowed-tools-choice",
    ),
]


@pytest.mark.parametrize(("messages", "fields", "param"), REJECTED)
def test_unsupported_requests_are_refused(
    messages: list[completion_pb2.Message], fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(GatewayError) as caught:
        body_for(*messages, **fields)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.reason == errors.INVALID_REQUEST
    assert caught.value.param == param


@pytest.mark.parametrize(("part", "kind"), [(audio_part(), "input_audio"), (file_part(), "file")])
def test_audio_and_file_refusals_name_anthropic(part: completion_pb2.ContentPart, kind: str) -> None:
    with pytest.raises(GatewayError, match=f"Anthropic does not accept {kind} content parts"):
        body_for(parts(completion_pb2.ROLE_USER, part))


def anthropic_message(content: list[dict[str, Any]], stop_reason: str = "end_turn", **usage: int) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, **usage},
    }


def expected_usage(prompt: int = 10, completion: int = 5, cached: int = 0, created: int = 0) -> completion_pb2.Usage:
    return completion_pb2.Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=completion_pb2.PromptTokensDetails(cached_tokens=cached),
        cache_creation_tokens=created,
    )


def test_text_response() -> None:
    body = anthropic_message([text_block("Hello"), text_block(" world")])
    assert response_from_anthropic(body, CREATED) == completion_pb2.ChatResponse(
        id=ID,
        created=CREATED,
        model=MODEL,
        choices=[
            completion_pb2.Choice(
                index=0,
                message=Msg(role=completion_pb2.ROLE_ASSISTANT, text="Hello world", null_fields=["refusal"]),
                finish_reason=completion_pb2.FINISH_REASON_STOP,
            )
        ],
        usage=expected_usage(),
    )


def test_tool_use_response() -> None:
    body = anthropic_message(
        [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris", "days": 2}},
            {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
        ],
        stop_reason="tool_use",
    )
    function = completion_pb2.FunctionCall
    assert response_from_anthropic(body, CREATED).choices[0] == completion_pb2.Choice(
        index=0,
        message=Msg(
            role=completion_pb2.ROLE_ASSISTANT,
            tool_calls=[
                completion_pb2.ToolCall(
                    id="toolu_1",
                    type="function",
                    function=function(name="get_weather", arguments='{"city":"Paris","days":2}'),
                ),
                completion_pb2.ToolCall(id="toolu_2", type="function", function=function(name="now", arguments="{}")),
            ],
            null_fields=["content", "refusal"],
        ),
        finish_reason=completion_pb2.FINISH_REASON_TOOL_CALLS,
    )


def test_usage_counts_cache_reads_and_writes_as_prompt_tokens() -> None:
    body = anthropic_message([text_block("x")], cache_read_input_tokens=100, cache_creation_input_tokens=20)
    assert response_from_anthropic(body, CREATED).usage == expected_usage(prompt=130, cached=100, created=20)


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", completion_pb2.FINISH_REASON_STOP),
        ("stop_sequence", completion_pb2.FINISH_REASON_STOP),
        ("pause_turn", completion_pb2.FINISH_REASON_STOP),
        ("max_tokens", completion_pb2.FINISH_REASON_LENGTH),
        ("model_context_window_exceeded", completion_pb2.FINISH_REASON_LENGTH),
        ("tool_use", completion_pb2.FINISH_REASON_TOOL_CALLS),
        ("refusal", completion_pb2.FINISH_REASON_CONTENT_FILTER),
        ("something_new", completion_pb2.FINISH_REASON_UNSPECIFIED),
    ],
)
def test_stop_reasons(stop_reason: str, finish_reason: completion_pb2.FinishReason.ValueType) -> None:
    body = anthropic_message([text_block("x")], stop_reason=stop_reason)
    assert response_from_anthropic(body, CREATED).choices[0].finish_reason == finish_reason


def message_start(**usage: int) -> tuple[str, dict[str, Any]]:
    message = anthropic_message([])
    message.update(stop_reason=None, usage={"input_tokens": 10, "output_tokens": 1, **usage})
    return "message_start", {"type": "message_start", "message": message}


def event(name: str, **data: Any) -> tuple[str, dict[str, Any]]:
    return name, {"type": name, **data}


def chunk(*choices: completion_pb2.ChunkChoice, usage: completion_pb2.Usage | None = None) -> completion_pb2.ChatChunk:
    out = completion_pb2.ChatChunk(id=ID, created=CREATED, model=MODEL, choices=choices)
    if usage is not None:
        out.usage.CopyFrom(usage)
    return out


def delta_chunk(
    finish_reason: completion_pb2.FinishReason.ValueType = completion_pb2.FINISH_REASON_UNSPECIFIED, **delta: Any
) -> completion_pb2.ChatChunk:
    return chunk(completion_pb2.ChunkChoice(index=0, delta=completion_pb2.Delta(**delta), finish_reason=finish_reason))


ROLE_CHUNK = delta_chunk(role=completion_pb2.ROLE_ASSISTANT, content="", null_fields=["refusal"])


def translate(events: list[tuple[str, dict[str, Any]]]) -> tuple[list[completion_pb2.ChatChunk], bool]:
    translator = StreamTranslator(CREATED)
    chunks = [c for name, data in events if (c := translator.chunk_from_event(name, data)) is not None]
    return chunks, translator.stopped


def test_text_stream() -> None:
    events = [
        message_start(cache_read_input_tokens=4),
        event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        event("ping"),
        event("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hello"}),
        event("content_block_delta", index=0, delta={"type": "text_delta", "text": " world"}),
        event("content_block_stop", index=0),
        event("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None}, usage={"output_tokens": 7}),
        event("message_stop"),
    ]
    assert translate(events) == (
        [
            ROLE_CHUNK,
            delta_chunk(content="Hello"),
            delta_chunk(content=" world"),
            delta_chunk(finish_reason=completion_pb2.FINISH_REASON_STOP),
            chunk(usage=expected_usage(prompt=14, completion=7, cached=4)),
        ],
        True,
    )


def tool_delta(index: int, **fields: Any) -> completion_pb2.ChatChunk:
    return delta_chunk(tool_calls=[completion_pb2.ToolCallDelta(index=index, has_function=True, **fields)])


def test_two_tool_use_blocks_get_stable_openai_indexes() -> None:
    def json_delta(index: int, partial: str) -> tuple[str, dict[str, Any]]:
        return event("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": partial})

    def tool_start(index: int, call_id: str, name: str) -> tuple[str, dict[str, Any]]:
        block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
        return event("content_block_start", index=index, content_block=block)

    events = [
        message_start(),
        event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        event("content_block_delta", index=0, delta={"type": "text_delta", "text": "Checking."}),
        event("content_block_stop", index=0),
        tool_start(1, "toolu_a", "get_weather"),
        json_delta(1, ""),
        json_delta(1, '{"city": '),
        json_delta(1, '"Paris"}'),
        event("content_block_stop", index=1),
        tool_start(2, "toolu_b", "get_time"),
        json_delta(2, "{}"),
        event("content_block_stop", index=2),
        event("message_delta", delta={"stop_reason": "tool_use", "stop_sequence": None}, usage={"output_tokens": 30}),
        event("message_stop"),
    ]
    assert translate(events) == (
        [
            ROLE_CHUNK,
            delta_chunk(content="Checking."),
            tool_delta(0, id="toolu_a", type="function", name="get_weather", arguments=""),
            tool_delta(0, arguments='{"city": '),
            tool_delta(0, arguments='"Paris"}'),
            tool_delta(1, id="toolu_b", type="function", name="get_time", arguments=""),
            tool_delta(1, arguments="{}"),
            delta_chunk(finish_reason=completion_pb2.FINISH_REASON_TOOL_CALLS),
            chunk(usage=expected_usage(completion=30)),
        ],
        True,
    )


def test_stream_without_message_stop_is_not_stopped() -> None:
    chunks, stopped = translate(
        [message_start(), event("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hi"})]
    )
    assert len(chunks) == 2
    assert not stopped


def test_unknown_events_and_deltas_are_skipped() -> None:
    events = [
        message_start(),
        event("content_block_start", index=0, content_block={"type": "thinking", "thinking": ""}),
        event("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "hmm"}),
        event("content_block_delta", index=0, delta={"type": "signature_delta", "signature": "sig"}),
        event("content_block_delta", index=5, delta={"type": "input_json_delta", "partial_json": "{}"}),
        event("brand_new_event"),
    ]
    assert translate(events) == ([ROLE_CHUNK], False)


def test_error_event_raises_mapped_error() -> None:
    translator = StreamTranslator(CREATED)
    translator.chunk_from_event(*message_start())
    with pytest.raises(GatewayError) as caught:
        translator.chunk_from_event(
            "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        )
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.message == "Overloaded"
    assert caught.value.detail == error_pb2.ErrorDetail(http_status=503, type="server_error", code="overloaded")


def anthropic_error(kind: str, message: str = "boom") -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"})


ERRORS = [
    (400, "invalid_request_error", grpc.StatusCode.INVALID_ARGUMENT, errors.INVALID_REQUEST, 400,
     "invalid_request_error", None),
    (413, "request_too_large", grpc.StatusCode.INVALID_ARGUMENT, errors.INVALID_REQUEST, 400, "invalid_request_error",
     "request_too_large"),
    (401, "authentication_error", grpc.StatusCode.INTERNAL, errors.UPSTREAM_AUTH, 401, "invalid_request_error",
     "invalid_api_key"),
    (403, "permission_error", grpc.StatusCode.INTERNAL, errors.UPSTREAM_AUTH, 403, "invalid_request_error",
     "permission_denied"),
    (402, "billing_error", grpc.StatusCode.RESOURCE_EXHAUSTED, errors.UPSTREAM_ERROR, 429, "insufficient_quota",
     "insufficient_quota"),
    (404, "not_found_error", grpc.StatusCode.NOT_FOUND, errors.MODEL_NOT_FOUND, 404, "invalid_request_error",
     "model_not_found"),
    (429, "rate_limit_error", grpc.StatusCode.RESOURCE_EXHAUSTED, errors.RATE_LIMITED, 429, "requests",
     "rate_limit_exceeded"),
    (500, "api_error", grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_ERROR, 500, "server_error", None),
    (504, "timeout_error", grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_ERROR, 504, "server_error", "timeout"),
    (529, "overloaded_error", grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_ERROR, 503, "server_error", "overloaded"),
]  # fmt: skip


@pytest.mark.parametrize(("status", "kind", "code", "reason", "http_status", "error_type", "error_code"), ERRORS)
def test_error_types(
    status: int,
    kind: str,
    code: grpc.StatusCode,
    reason: str,
    http_status: int,
    error_type: str,
    error_code: str | None,
) -> None:
    err = error_from_response(status, anthropic_error(kind, "Nope."), {})
    assert (err.code, err.reason, err.message) == (code, reason, "Nope.")
    detail = error_pb2.ErrorDetail(http_status=http_status, type=error_type)
    if error_code is not None:
        detail.code = error_code
    assert err.detail == detail


@pytest.mark.parametrize(
    ("status", "code", "detail"),
    [
        (
            529,
            grpc.StatusCode.UNAVAILABLE,
            error_pb2.ErrorDetail(http_status=503, type="server_error", code="overloaded"),
        ),
        (502, grpc.StatusCode.UNAVAILABLE, error_pb2.ErrorDetail(http_status=502, type="server_error")),
        (422, grpc.StatusCode.INVALID_ARGUMENT, error_pb2.ErrorDetail(http_status=422, type="invalid_request_error")),
    ],
)
def test_error_without_json_body_uses_status(status: int, code: grpc.StatusCode, detail: error_pb2.ErrorDetail) -> None:
    err = error_from_response(status, b"<html>bad gateway</html>", {})
    assert (err.code, err.detail) == (code, detail)
    assert err.message == f"The Anthropic upstream returned HTTP {status}."


@pytest.mark.parametrize(("status", "kind"), [(429, "rate_limit_error"), (529, "overloaded_error")])
def test_retry_after_is_honoured(status: int, kind: str) -> None:
    assert error_from_response(status, anthropic_error(kind), {"retry-after": "7"}).retry_after == 7.0


def test_error_event_without_details_is_a_server_error() -> None:
    err = error_from_event({"type": "error"})
    assert err.code == grpc.StatusCode.UNAVAILABLE
    assert err.detail == error_pb2.ErrorDetail(http_status=500, type="server_error")
