"""AnthropicProvider I/O against a real loopback aiohttp upstream replaying Anthropic JSON and SSE."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from chittycan.v1 import completion_pb2, embedding_pb2, error_pb2
from engine import errors
from engine.config import ProviderSettings
from engine.errors import GatewayError
from engine.providers import build_provider
from engine.providers.anthropic import ANTHROPIC_VERSION, AnthropicProvider
from engine.providers.base import UpstreamCall
from engine.upstream_http import UpstreamHttp

MODEL = "claude-sonnet-4-20250514"
CREATED = 1733000000
KEY = "sk-ant-test-key"
CALL = UpstreamCall(model=MODEL, api_key=KEY, connect_timeout=5.0, first_byte_timeout=5.0, total_timeout=10.0)
REQUEST = completion_pb2.ChatRequest(
    model="claude-sonnet-4",
    messages=[
        completion_pb2.Message(role=completion_pb2.ROLE_SYSTEM, text="Be brief."),
        completion_pb2.Message(role=completion_pb2.ROLE_USER, text="Say hello."),
    ],
    max_tokens=64,
)
MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [{"type": "text", "text": "Hello!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 3, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
}
TEXT_STREAM = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-20250514","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":8,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":3}}

event: message_stop
data: {"type":"message_stop"}

"""  # noqa: E501
OVERLOADED_EVENT = (
    b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
)
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
JSON_HEADERS = {"Content-Type": "application/json"}


def anthropic_error(kind: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_01"})


@dataclass
class Received:
    """What the scripted upstream was sent."""

    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Script:
    """The one reply the upstream gives: status, headers and body pieces written one by one."""

    status: int
    pieces: list[bytes]
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON_HEADERS))
    hold: asyncio.Event | None = None  # answer only once this is set


@dataclass
class Upstream:
    """A running scripted upstream."""

    server: TestServer
    received: list[Received]

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("/"))


StartUpstream = Callable[[Script], Awaitable[Upstream]]


@pytest.fixture
async def start_upstream(aiohttp_server: Any) -> StartUpstream:
    async def start(script: Script) -> Upstream:
        received: list[Received] = []

        async def messages(request: web.Request) -> web.StreamResponse:
            headers = {name.lower(): value for name, value in request.headers.items()}
            received.append(Received(request.path, headers, orjson.loads(await request.read())))
            if script.hold is not None:
                await script.hold.wait()
            resp = web.StreamResponse(status=script.status, headers=script.headers)
            await resp.prepare(request)
            for piece in script.pieces:
                await resp.write(piece)
            await resp.write_eof()
            return resp

        app = web.Application()
        app.router.add_post("/v1/messages", messages)
        return Upstream(await aiohttp_server(app), received)

    return start


@pytest.fixture
async def session() -> AsyncIterator[UpstreamHttp]:
    http = UpstreamHttp()
    yield http
    await http.close()


def provider(upstream_url: str, session: UpstreamHttp) -> AnthropicProvider:
    return AnthropicProvider("anthropic", upstream_url, session, clock=lambda: CREATED + 0.75)


async def collect(
    stream: AsyncIterator[completion_pb2.ChatChunk], into: list[completion_pb2.ChatChunk] | None = None
) -> list[completion_pb2.ChatChunk]:
    chunks = [] if into is None else into
    async for chunk in stream:
        chunks.append(chunk)
    return chunks


async def test_complete_sends_anthropic_headers_and_body(start_upstream: StartUpstream, session: UpstreamHttp) -> None:
    upstream = await start_upstream(Script(200, [orjson.dumps(MESSAGE)]))
    response = await provider(upstream.base_url, session).complete(REQUEST, CALL)

    [sent] = upstream.received
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == ANTHROPIC_VERSION == "2023-06-01"
    assert sent.headers["content-type"] == "application/json"
    assert "authorization" not in sent.headers
    assert sent.body == {
        "model": MODEL,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}],
        "system": "Be brief.",
    }
    assert response == completion_pb2.ChatResponse(
        id="chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL",
        created=CREATED,
        model=MODEL,
        choices=[
            completion_pb2.Choice(
                index=0,
                message=completion_pb2.Message(
                    role=completion_pb2.ROLE_ASSISTANT, text="Hello!", null_fields=["refusal"]
                ),
                finish_reason=completion_pb2.FINISH_REASON_STOP,
            )
        ],
        usage=completion_pb2.Usage(
            prompt_tokens=12,
            completion_tokens=3,
            total_tokens=15,
            prompt_tokens_details=completion_pb2.PromptTokensDetails(cached_tokens=0),
        ),
    )


async def test_base_url_ending_in_v1_is_not_doubled(start_upstream: StartUpstream, session: UpstreamHttp) -> None:
    upstream = await start_upstream(Script(200, [orjson.dumps(MESSAGE)]))
    await provider(upstream.base_url + "v1", session).complete(REQUEST, CALL)
    assert [r.path for r in upstream.received] == ["/v1/messages"]


async def test_no_key_sends_no_x_api_key(start_upstream: StartUpstream, session: UpstreamHttp) -> None:
    upstream = await start_upstream(Script(200, [orjson.dumps(MESSAGE)]))
    call = UpstreamCall(model=MODEL, api_key=None, connect_timeout=5.0, first_byte_timeout=5.0, total_timeout=10.0)
    await provider(upstream.base_url, session).complete(REQUEST, call)
    assert "x-api-key" not in upstream.received[0].headers


def stream_chunk(*choices: completion_pb2.ChunkChoice) -> completion_pb2.ChatChunk:
    return completion_pb2.ChatChunk(
        id="chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL", created=CREATED, model=MODEL, choices=choices
    )


def content_chunk(**delta: Any) -> completion_pb2.ChatChunk:
    return stream_chunk(completion_pb2.ChunkChoice(index=0, delta=completion_pb2.Delta(**delta)))


async def test_stream_translates_events_split_across_writes(
    start_upstream: StartUpstream, session: UpstreamHttp
) -> None:
    # Writes cut mid-line and mid-frame: the SSE parser must reassemble them.
    pieces = [TEXT_STREAM[i : i + 37] for i in range(0, len(TEXT_STREAM), 37)]
    upstream = await start_upstream(Script(200, pieces, SSE_HEADERS))
    chunks = await collect(provider(upstream.base_url, session).stream_completion(REQUEST, CALL))

    assert upstream.received[0].body["stream"] is True
    usage = stream_chunk()
    usage.usage.CopyFrom(
        completion_pb2.Usage(
            prompt_tokens=20,
            completion_tokens=3,
            total_tokens=23,
            prompt_tokens_details=completion_pb2.PromptTokensDetails(cached_tokens=8),
        )
    )
    assert chunks == [
        content_chunk(role=completion_pb2.ROLE_ASSISTANT, content="", null_fields=["refusal"]),
        content_chunk(content="Hello"),
        content_chunk(content="!"),
        stream_chunk(
            completion_pb2.ChunkChoice(
                index=0, delta=completion_pb2.Delta(), finish_reason=completion_pb2.FINISH_REASON_STOP
            )
        ),
        usage,
    ]


async def test_truncated_stream_raises_unavailable_after_its_chunks(
    start_upstream: StartUpstream, session: UpstreamHttp
) -> None:
    cut = TEXT_STREAM[: TEXT_STREAM.index(b"event: message_delta")]
    upstream = await start_upstream(Script(200, [cut], SSE_HEADERS))
    chunks: list[completion_pb2.ChatChunk] = []
    with pytest.raises(GatewayError) as caught:
        await collect(provider(upstream.base_url, session).stream_completion(REQUEST, CALL), chunks)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == errors.UPSTREAM_UNAVAILABLE
    assert [c.choices[0].delta.content for c in chunks] == ["", "Hello", "!"]


async def test_error_event_mid_stream_raises_overloaded(start_upstream: StartUpstream, session: UpstreamHttp) -> None:
    head = TEXT_STREAM[: TEXT_STREAM.index(b"event: content_block_stop")]
    upstream = await start_upstream(Script(200, [head, OVERLOADED_EVENT], SSE_HEADERS))
    chunks: list[completion_pb2.ChatChunk] = []
    with pytest.raises(GatewayError) as caught:
        await collect(provider(upstream.base_url, session).stream_completion(REQUEST, CALL), chunks)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.detail == error_pb2.ErrorDetail(http_status=503, type="server_error", code="overloaded")
    assert len(chunks) == 3


ERROR_CASES = [
    pytest.param(
        429,
        anthropic_error("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
        {"retry-after": "3"},
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        error_pb2.ErrorDetail(http_status=429, type="requests", code="rate_limit_exceeded"),
        3.0,
        id="rate-limit",
    ),
    pytest.param(
        529,
        anthropic_error("overloaded_error", "Overloaded"),
        {"retry-after": "1"},
        grpc.StatusCode.UNAVAILABLE,
        error_pb2.ErrorDetail(http_status=503, type="server_error", code="overloaded"),
        1.0,
        id="overloaded",
    ),
    pytest.param(
        401,
        anthropic_error("authentication_error", "invalid x-api-key"),
        {},
        grpc.StatusCode.INTERNAL,
        error_pb2.ErrorDetail(http_status=401, type="invalid_request_error", code="invalid_api_key"),
        None,
        id="auth",
    ),
    pytest.param(
        400,
        anthropic_error("invalid_request_error", "temperature: range: 0..1"),
        {},
        grpc.StatusCode.INVALID_ARGUMENT,
        error_pb2.ErrorDetail(http_status=400, type="invalid_request_error"),
        None,
        id="invalid",
    ),
]


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize(("status", "body", "headers", "code", "detail", "retry_after"), ERROR_CASES)
async def test_error_responses_map(
    start_upstream: StartUpstream,
    session: UpstreamHttp,
    streaming: bool,
    status: int,
    body: bytes,
    headers: dict[str, str],
    code: grpc.StatusCode,
    detail: error_pb2.ErrorDetail,
    retry_after: float | None,
) -> None:
    upstream = await start_upstream(Script(status, [body], {**JSON_HEADERS, **headers}))
    anthropic = provider(upstream.base_url, session)
    answer: Awaitable[object] = (
        collect(anthropic.stream_completion(REQUEST, CALL)) if streaming else anthropic.complete(REQUEST, CALL)
    )
    with pytest.raises(GatewayError) as caught:
        await answer
    assert (caught.value.code, caught.value.detail, caught.value.retry_after) == (code, detail, retry_after)
    assert caught.value.message == orjson.loads(body)["error"]["message"]


async def test_refused_request_never_reaches_the_upstream(start_upstream: StartUpstream, session: UpstreamHttp) -> None:
    upstream = await start_upstream(Script(200, [orjson.dumps(MESSAGE)]))
    request = completion_pb2.ChatRequest()
    request.CopyFrom(REQUEST)
    request.n = 2
    with pytest.raises(GatewayError) as caught:
        await provider(upstream.base_url, session).complete(request, CALL)
    assert (caught.value.code, caught.value.param) == (grpc.StatusCode.INVALID_ARGUMENT, "n")
    assert upstream.received == []


async def test_invalid_json_answer_is_unavailable(start_upstream: StartUpstream, session: UpstreamHttp) -> None:
    upstream = await start_upstream(Script(200, [b"<html>"]))
    with pytest.raises(GatewayError) as caught:
        await provider(upstream.base_url, session).complete(REQUEST, CALL)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


async def test_slow_upstream_times_out(start_upstream: StartUpstream, session: UpstreamHttp) -> None:
    hold = asyncio.Event()
    upstream = await start_upstream(Script(200, [orjson.dumps(MESSAGE)], hold=hold))
    call = UpstreamCall(model=MODEL, api_key=KEY, connect_timeout=5.0, first_byte_timeout=0.05, total_timeout=10.0)
    try:
        with pytest.raises(GatewayError) as caught:
            await provider(upstream.base_url, session).complete(REQUEST, call)
    finally:
        hold.set()
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, errors.UPSTREAM_TIMEOUT)


async def test_unreachable_upstream_is_unavailable(unused_tcp_port: int, session: UpstreamHttp) -> None:
    anthropic = provider(f"http://127.0.0.1:{unused_tcp_port}", session)
    with pytest.raises(GatewayError) as caught:
        await collect(anthropic.stream_completion(REQUEST, CALL))
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_UNAVAILABLE)


async def test_embed_is_unimplemented(session: UpstreamHttp) -> None:
    anthropic = provider("http://127.0.0.1:1", session)
    with pytest.raises(GatewayError) as caught:
        await anthropic.embed(embedding_pb2.EmbeddingRequest(model="x", text="hi"), CALL)
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNIMPLEMENTED, errors.UNSUPPORTED)
    assert caught.value.message == "Anthropic has no embeddings API; route embedding models elsewhere."


async def test_registry_builds_anthropic_provider(session: UpstreamHttp) -> None:
    settings = ProviderSettings(
        name="anthropic",
        kind="anthropic",
        base_url="https://api.anthropic.com",
        api_key=None,
        api_key_env="ANTHROPIC_API_KEY",
    )
    built = build_provider(settings, session)
    assert isinstance(built, AnthropicProvider)
    assert built.name == "anthropic"
