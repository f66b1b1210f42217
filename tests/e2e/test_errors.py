"""Every failure reaches the official SDK as the OpenAI error class, status, type, code and param it expects."""

import json
import socket
import time
from urllib.parse import quote

import openai
import pytest

from tests import rawhttp
from tests.stack import API_KEY, Stack
from tests.upstream import load_fixture

HELLO = [{"role": "user", "content": "hello"}]


def test_missing_key_is_401(stack: Stack) -> None:
    response = rawhttp.post(f"{stack.base_url}/chat/completions", json={"model": "gpt-4o", "messages": HELLO})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.headers["x-request-id"].startswith("req_")
    assert stack.upstream_requests() == []


def test_missing_key_comes_before_unknown_model(stack: Stack) -> None:
    response = rawhttp.post(f"{stack.base_url}/chat/completions", json={"model": "nope", "messages": HELLO})
    assert response.status_code == 401


def test_upstream_rejects_passthrough_key(stack: Stack) -> None:
    with (
        openai.OpenAI(api_key="sk-bad", base_url=stack.base_url, max_retries=0) as sdk,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        sdk.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI, stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="invalid-model-name", messages=HELLO)
    assert caught.value.code == "model_not_found"
    assert caught.value.param is None
    message = "The model `invalid-model-name` does not exist or you do not have access to it."
    assert caught.value.body["message"] == message
    assert stack.upstream_requests() == []


@pytest.mark.parametrize(
    "model",
    ["gpt-4o\u0000", "gpt-4o\n", "gpt-4o\r\nX-Injected: 1", "claude-sonnet-4\u001b[2J", "gpt-" + "x" * 5200],
)
def test_model_names_a_pattern_route_would_take_but_no_header_can_carry_are_404(stack: Stack, model: str) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    for path, body in (
        ("/chat/completions", {"model": model, "messages": HELLO}),
        ("/chat/completions", {"model": model, "messages": HELLO, "stream": True}),
        ("/embeddings", {"model": model, "input": "x"}),
    ):
        response = rawhttp.post(f"{stack.base_url}{path}", json=body, headers=auth)
        assert response.status_code == 404, (path, response.content[:200])
        error = response.json()["error"]
        assert error["code"] == "model_not_found"
        assert "\n" not in error["message"]
        assert len(error["message"]) < 400
        assert "x-injected" not in {k.lower() for k in response.headers}
    shown = rawhttp.get(f"{stack.base_url}/models/{quote(model, safe='')}", headers=auth)
    assert shown.status_code == 404
    assert shown.json()["error"]["type"] == "invalid_request_error"
    assert stack.upstream_requests() == []
    stack.flush()
    recorded = [r.requested_model for r in stack.engine.ledger.read()]
    assert recorded
    assert all(name.isascii() and name.isprintable() and len(name) <= 259 for name in recorded), recorded


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": HELLO}, "model", "missing_required_parameter"),
        ({"model": "gpt-4o"}, "messages", "missing_required_parameter"),
        ({"model": "gpt-4o", "messages": []}, "messages", "empty_array"),
        ({"model": "gpt-4o", "messages": "hi"}, "messages", "invalid_type"),
        ({"model": "gpt-4o", "messages": HELLO, "temperature": "hot"}, "temperature", "invalid_type"),
        ({"model": "gpt-4o", "messages": HELLO, "temperature": 3}, "temperature", "integer_above_max_value"),
        ({"model": "gpt-4o", "messages": HELLO, "max_tokens": 1.5}, "max_tokens", "invalid_type"),
        ({"model": "gpt-4o", "messages": HELLO, "stream": "yes"}, "stream", "invalid_type"),
        ({"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid_value"),
        ({"model": "gpt-4o", "messages": [{"role": "user"}]}, "messages[0].content", "missing_required_parameter"),
        ({"model": "gpt-4o", "messages": HELLO, "tool_choice": "always"}, "tool_choice", "invalid_value"),
        (
            {"model": "gpt-4o", "messages": HELLO, "response_format": {"type": "xml"}},
            "response_format.type",
            "invalid_value",
        ),
        (
            {"model": "gpt-4o", "messages": HELLO, "tools": [{"type": "function", "function": {"name": 5}}]},
            "tools[0].function.name",
            "invalid_type",
        ),
        (
            {"model": "gpt-4o", "messages": HELLO, "tools": [{"type": "function", "function": {}}]},
            "tools[0].function.name",
            "missing_required_parameter",
        ),
        (
            {"model": "gpt-4o", "messages": HELLO, "response_format": {"type": "json_schema", "json_schema": {}}},
            "response_format.json_schema.name",
            "missing_required_parameter",
        ),
    ],
)
def test_bad_fields_are_400_with_param(stack: Stack, body: dict[str, object], param: str, code: str) -> None:
    response = rawhttp.post(
        f"{stack.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert stack.upstream_requests() == []


def _nested(levels: int) -> object:
    value: object = []
    for _ in range(levels):
        value = [value]
    return value


DEEP = _nested(300)  # orjson reads up to 1,024 levels but writes only 255


@pytest.mark.parametrize(
    ("path", "body", "param", "code"),
    [
        ("/chat/completions", {"model": "gpt-4o", "messages": [{"role": ["user"], "content": "x"}]},
         "messages[0].role", "invalid_value"),
        ("/chat/completions", {"model": "gpt-4o", "messages": HELLO, "response_format": {"type": ["text"]}},
         "response_format.type", "invalid_value"),
        ("/chat/completions", {"model": "gpt-4o", "messages": HELLO, "max_tokens": 2**63},
         "max_tokens", "integer_above_max_value"),
        ("/chat/completions", {"model": "gpt-4o", "messages": HELLO, "seed": 2**63}, "seed", "integer_above_max_value"),
        ("/chat/completions", {"model": "gpt-4o", "messages": HELLO, "seed": -(2**63) - 1},
         "seed", "invalid_type"),  # below int64, orjson reads it as a float
        ("/chat/completions", {"model": "gpt-4o", "messages": HELLO, "stream_options": {"include_usage": True}},
         "stream_options", None),
        ("/chat/completions", {"model": "gpt-4o", "messages": HELLO, "x": DEEP}, None, "invalid_value"),
        ("/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "x", "x": DEEP}]},
         "messages[0]", "invalid_value"),
        ("/chat/completions", {"model": "gpt-4o", "messages": HELLO,
                               "tools": [{"type": "function", "function": {"name": "f", "parameters": {"p": DEEP}}}]},
         "tools[0].function.parameters", "invalid_value"),
        ("/chat/completions", {"model": "gpt-4o", "messages": HELLO, "tool_choice": {"type": "x", "x": DEEP}},
         "tool_choice", "invalid_value"),
        ("/embeddings", {"model": "text-embedding-3-small", "input": "x", "encoding_format": ["float"]},
         "encoding_format", "invalid_value"),
        ("/embeddings", {"model": "text-embedding-3-small", "input": [2**63]}, "input", "invalid_type"),
        ("/embeddings", {"model": "text-embedding-3-small", "input": [[2**63]]}, "input", "invalid_type"),
        ("/embeddings", {"model": "text-embedding-3-small", "input": "x", "dimensions": 2**31},
         "dimensions", "invalid_value"),
        ("/embeddings", {"model": "text-embedding-3-small", "input": "x", "x": DEEP}, None, "invalid_value"),
    ],
)  # fmt: skip
def test_values_no_field_can_hold_are_400_not_500(
    stack: Stack, path: str, body: dict[str, object], param: str | None, code: str | None
) -> None:
    response = rawhttp.post(
        f"{stack.base_url}{path}",
        content=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert stack.upstream_requests() == []


@pytest.mark.parametrize(
    ("value", "code"),
    [("", "empty_string"), (["a", ""], "empty_string"), (["a"] * 2049, "array_above_max_length"),
     ([[1]] * 2049, "array_above_max_length")],
)  # fmt: skip
def test_embeddings_input_the_spec_refuses_is_400(stack: Stack, value: object, code: str) -> None:
    for model in ("text-embedding-3-small", "local/minilm-l6"):  # the engine's own model too, which asks no upstream
        response = rawhttp.post(
            f"{stack.base_url}/embeddings",
            json={"model": model, "input": value},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["param"], error["code"]) == ("input", code)
    assert stack.upstream_requests() == []


def test_malformed_json_is_400(stack: Stack) -> None:
    response = rawhttp.post(
        f"{stack.base_url}/chat/completions",
        content=b'{"model": "gpt-4o", "messages": [',
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "could not parse the JSON body" in response.json()["error"]["message"]


def test_sdk_bad_request_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=HELLO, temperature=5)
    assert caught.value.param == "temperature"


def test_upstream_400_keeps_its_code_and_param(client: openai.OpenAI, stack: Stack) -> None:
    stack.call(lambda: stack.upstream.script(status=400, body=load_fixture("openai/context_length_exceeded.json")))
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == "messages"


def test_upstream_5xx_after_retries_is_api_status_error(client: openai.OpenAI, stack: Stack) -> None:
    stack.call(lambda: stack.upstream.script(status=500, times=5))
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert caught.value.status_code == 500
    assert len(stack.upstream_requests("/v1/chat/completions")) == 2, "one retry (retry.attempts = 2)"


def test_upstream_429_is_rate_limit_error_with_retry_after(stack: Stack) -> None:
    limits = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20s"}
    stack.call(
        lambda: stack.upstream.script(
            status=429,
            body=load_fixture("openai/rate_limited.json"),
            headers={"retry-after": "30", **limits},
            times=2,
        )
    )
    response = rawhttp.post(
        f"{stack.base_url}/chat/completions",
        json={"model": "gpt-4o", "messages": HELLO},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert response.headers["retry-after"] == "30"
    assert {k: v for k, v in response.headers.items() if k.startswith("x-ratelimit-")} == limits
    assert len(stack.upstream_requests()) == 1, "a retry-after beyond retry_after_max is not waited for"


def test_unreachable_upstream_is_503(stack_factory: object) -> None:
    stack = stack_factory(providers={"openai": {"base_url": "http://127.0.0.1:9/v1"}})  # type: ignore[operator]
    with (
        openai.OpenAI(api_key=API_KEY, base_url=stack.base_url, max_retries=0) as sdk,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        sdk.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert caught.value.status_code == 503
    assert caught.value.code == "upstream_unavailable"


def test_upstream_timeout_is_504(stack_factory: object) -> None:
    stack = stack_factory(routes=[{"model": "slow", "provider": "openai", "upstream_model": "gpt-4o", "timeout": 0.3}])  # type: ignore[operator]
    stack.call(lambda: stack.upstream.script(delay=5, times=2))
    started = time.monotonic()
    with (
        openai.OpenAI(api_key=API_KEY, base_url=stack.base_url, max_retries=0) as sdk,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        sdk.chat.completions.create(model="slow", messages=HELLO)
    assert caught.value.status_code == 504
    assert caught.value.code == "timeout"
    assert time.monotonic() - started < 4


def test_error_after_stream_started_is_raised_in_band(client: openai.OpenAI, stack: Stack) -> None:
    stack.call(lambda: stack.upstream.script(fail_after_chunks=2))
    stream = client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
    received: list[openai.types.chat.ChatCompletionChunk] = []

    def drain() -> None:
        for chunk in stream:
            received.append(chunk)

    with pytest.raises(openai.APIError):
        drain()
    # aiohttp drops bytes still buffered once it sees the broken connection, so the second chunk may be lost.
    assert 1 <= len(received) <= 2
    assert received[0].choices[0].delta.role == "assistant"
    assert len(stack.upstream_requests()) == 1, "never retried once streaming started"


def test_a_stream_cut_short_is_metered_without_a_budget(client: openai.OpenAI, stack: Stack) -> None:
    """What was delivered of a stream that broke or was abandoned is charged, budget or not (OpenAI bills it)."""
    stack.call(lambda: stack.upstream.script(fail_after_chunks=3))
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True):
            pass
    stack.call(lambda: stack.upstream.script(hang_after_chunks=3))
    with client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True) as stream:
        chunks = iter(stream)
        next(chunks)
        next(chunks)
    deadline = time.monotonic() + 10
    while True:
        stack.flush()
        records = list(stack.engine.ledger.read())
        if len(records) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(records) == 2
    for record in records:
        assert record.completion_tokens > 0, record
        assert record.cost_known, record
        assert record.cost_micros > 0, record
    assert records[1].cancelled


def test_stream_error_before_first_byte_has_real_status(client: openai.OpenAI, stack: Stack) -> None:
    stack.call(lambda: stack.upstream.script(status=400, body=load_fixture("openai/context_length_exceeded.json")))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)


def test_a_key_no_header_can_carry_is_401(stack: Stack) -> None:
    response = rawhttp.post(
        f"{stack.base_url}/chat/completions",
        json={"model": "gpt-4o", "messages": HELLO},
        headers={"Authorization": "Bearer sk-\u00e9\u00e9"},  # sent as Latin-1 bytes, read back as surrogates
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert stack.upstream_requests() == []


def test_wrong_method_is_405_with_allow(stack: Stack) -> None:
    response = rawhttp.get(f"{stack.base_url}/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("path", "broken"),
    [
        ("/chat/completions", b'{"id": "chatcmpl-1", "object": "chat.completion", "choices": "nope"}'),
        ("/chat/completions", b"[]"),
        ("/embeddings", b'{"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": "AAAA"}]}'),
    ],
)
def test_an_upstream_answer_of_the_wrong_shape_is_503(stack: Stack, path: str, broken: bytes) -> None:
    stack.call(lambda: stack.upstream.script(body=broken, times=2))
    model = "gpt-4o" if path == "/chat/completions" else "text-embedding-3-small"
    body = {"model": model, "messages": HELLO} if path == "/chat/completions" else {"model": model, "input": "x"}
    headers = {"Authorization": f"Bearer {API_KEY}", "Cache-Control": "no-store"}
    response = rawhttp.post(f"{stack.base_url}{path}", json=body, headers=headers)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["message"] == "The openai upstream sent a malformed answer."


def test_a_request_that_is_not_http_leaves_no_key_in_the_log(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    host, port = stack.base_url.removeprefix("http://").removesuffix("/v1").split(":")
    secret = "sk-secret-0123456789"
    for head in (f"Authorization: Bearer {secret}\x01", f"Authorization: Bearer {secret}{'a' * 9000}"):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n".encode())
            assert sock.recv(4096).startswith(b"HTTP/1.0 400")
    refused = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(refused) == 2
    assert "not valid HTTP" in refused[0].getMessage()
    assert secret not in caplog.text


def test_unknown_path_is_openai_404(stack: Stack) -> None:
    response = rawhttp.post(f"{stack.base_url}/nope", json={})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/nope)"


@pytest.mark.parametrize(("method", "path"), [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")])
def test_every_response_has_a_request_id(stack: Stack, method: str, path: str) -> None:
    response = rawhttp.request(method, f"{stack.root_url}{path}")
    assert response.status_code == 200
    assert response.headers["x-request-id"].startswith("req_")
