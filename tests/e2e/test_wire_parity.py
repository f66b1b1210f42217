"""Byte-level parity: what the gateway sends a client equals what the upstream (acting as OpenAI) produced."""

import re
import socket
import time

import orjson

from tests import rawhttp
from tests.stack import API_KEY, Stack

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _both(stack: Stack, path: str, body: dict[str, object]) -> tuple[rawhttp.RawResponse, rawhttp.RawResponse]:
    direct = rawhttp.post(f"{stack.upstream_url}/v1{path}", json=body, headers=AUTH)
    gateway = rawhttp.post(f"{stack.base_url}{path}", json=body, headers=AUTH)
    return direct, gateway


def _key_paths(value: object, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in [f"{prefix}.{k}", *_key_paths(v, f"{prefix}.{k}")]]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _key_paths(v, f"{prefix}[{i}]")]
    return []


def test_sse_bytes_equal_upstream_with_usage(stack: Stack) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Count to 3."}], "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    direct, gateway = _both(stack, "/chat/completions", body)
    frames = [f for f in gateway.content.split(b"\n\n") if f and not f.startswith(b":")]
    assert b"\n\n".join(frames) + b"\n\n" == direct.content
    assert gateway.headers["content-type"] == "text/event-stream; charset=utf-8"


def test_sse_bytes_equal_upstream_for_tool_calls(stack: Stack) -> None:
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "weather in Paris"}], "tools": [tool],
            "stream": True}  # fmt: skip
    direct, gateway = _both(stack, "/chat/completions", body)
    assert gateway.content.endswith(b"data: [DONE]\n\n")
    # The upstream was asked for usage (the gateway meters it) but the client was not: the client sees
    # the stream the upstream sends a client that did not ask, i.e. without the usage chunk.
    # The upstream derives ids from the request bytes, which differ by stream_options: compare without them.
    plain = rawhttp.post(f"{stack.upstream_url}/v1/chat/completions", json=body, headers=AUTH)
    frames = [f for f in gateway.content.split(b"\n\n") if f and not f.startswith(b":")]
    ids = re.compile(rb"(chatcmpl|call)-?_?[0-9a-zA-Z]+")
    assert ids.sub(b"ID", b"\n\n".join(frames) + b"\n\n") == ids.sub(b"ID", plain.content)
    assert direct.status_code == 200


def test_json_body_keys_and_values_equal_upstream(stack: Stack) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hi"}], "temperature": 0.2}
    direct, gateway = _both(stack, "/chat/completions", body)
    assert gateway.json() == direct.json()
    assert _key_paths(gateway.json()) == _key_paths(direct.json())
    assert gateway.content == direct.content
    assert gateway.headers["content-type"] == direct.headers["content-type"] == "application/json"


def _openai_headers(response: rawhttp.RawResponse) -> dict[str, str]:
    """OpenAI's own headers: its version, processing time, request id and rate limits."""
    names = ("openai-", "x-ratelimit-", "x-request-id")
    return {k.lower(): v for k, v in response.headers.items() if k.lower().startswith(names)}


def test_openai_headers_reach_the_client_json_and_stream(stack: Stack) -> None:
    body: dict[str, object] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hi"}]}
    for extra in ({"temperature": 0.2}, {"temperature": 0.2, "stream": True}):
        direct, gateway = _both(stack, "/chat/completions", {**body, **extra})
        sent, got = _openai_headers(direct), _openai_headers(gateway)
        assert set(got) == set(sent), "every header OpenAI sends, and no other of its names"
        rate_limits = {k: v for k, v in sent.items() if k.startswith("x-ratelimit-")}
        assert len(rate_limits) == 6
        assert rate_limits.items() <= got.items(), "the upstream's rate limits, as it spelled them"
        assert got["openai-version"] == sent["openai-version"] == "2020-10-01"
        assert got["openai-processing-ms"].isdigit()
        assert got["x-request-id"].startswith("req_")
        assert gateway.headers["x-chittycan-cache"] == "BYPASS"


def test_a_cache_hit_reports_no_upstream_rate_limits(stack: Stack) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hi"}], "temperature": 0}
    first = rawhttp.post(f"{stack.base_url}/chat/completions", json=body, headers=AUTH)
    assert first.headers["x-chittycan-cache"] == "MISS"
    assert first.headers["x-ratelimit-remaining-requests"] == "9999"
    for _ in range(200):  # the entry is committed off the request path
        again = rawhttp.post(f"{stack.base_url}/chat/completions", json=body, headers=AUTH)
        if again.headers["x-chittycan-cache"] == "HIT":
            break
    assert again.headers["x-chittycan-cache"] == "HIT"
    assert not [k for k in again.headers if k.lower().startswith("x-ratelimit-")], "no upstream was asked"
    assert again.headers["openai-version"] == "2020-10-01"
    assert again.headers["openai-processing-ms"].isdigit()


def test_embeddings_json_equal_upstream(stack: Stack) -> None:
    body = {"model": "text-embedding-3-small", "input": ["x", "y"], "dimensions": 16}
    direct, gateway = _both(stack, "/embeddings", body)
    assert gateway.content == direct.content


def test_client_disconnect_closes_the_upstream_request(stack: Stack) -> None:
    stack.call(lambda: stack.upstream.script(hang_after_chunks=2))
    host, port = stack.base_url.removeprefix("http://").removesuffix("/v1").split(":")
    payload = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        received = b""
        while received.count(b"data: ") < 2:
            received += sock.recv(65536)
    deadline = time.monotonic() + 10
    while not stack.call(stack.upstream.stream_closed.is_set):
        assert time.monotonic() < deadline, "the upstream request was not closed after the client left"
        time.sleep(0.02)
    stack.flush()
    records = list(stack.engine.ledger.read())
    assert records[-1].cancelled
