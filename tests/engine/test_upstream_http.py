"""engine.upstream_http against real loopback servers: aiohttp for ordinary HTTP and TLS, and a raw asyncio server
for what a well-behaved server never sends (broken framing, early closes, silence)."""

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass

import pytest
import trustme
from aiohttp import web

from engine import upstream_http
from engine.upstream_http import Timeouts, UpstreamHttp, UpstreamHttpError

FAST = Timeouts(connect=2.0, read=2.0)
JSON = {"Content-Type": "application/json"}

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def http() -> AsyncIterator[UpstreamHttp]:
    client = UpstreamHttp()
    yield client
    await client.close()


@dataclass
class _Served:
    url: str
    connections: int = 0


@asynccontextmanager
async def _raw_server(script: Script) -> AsyncIterator[_Served]:
    """A server running `script` on each connection it accepts (and counts)."""
    handlers: set[asyncio.Task[None]] = set()
    served = _Served("")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        served.connections += 1
        try:
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    served.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/x"
    try:
        yield served
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(v) for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")) if k.lower() == b"content-length"
    )
    return head + await reader.readexactly(length)


def _answer_and_close(reply: bytes) -> Script:
    """A script that reads one request, sends `reply` and closes the connection."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(reply)
        await writer.drain()

    return script


async def _app_server(aiohttp_server: Callable[..., Awaitable[object]], app: web.Application) -> str:
    server = await aiohttp_server(app)
    return str(server.make_url("/v1/x"))  # type: ignore[attr-defined]


async def test_posts_the_body_and_headers_and_reuses_the_connection(
    aiohttp_server: Callable[..., Awaitable[object]], http: UpstreamHttp
) -> None:
    peers: list[object] = []
    seen: list[tuple[bytes, dict[str, str]]] = []

    async def echo(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        seen.append((await request.read(), dict(request.headers)))
        return web.Response(body=b'{"n":%d}' % len(seen), headers={"Retry-After": "3"})

    app = web.Application()
    app.router.add_post("/v1/x", echo)
    url = await _app_server(aiohttp_server, app)
    for n in (1, 2, 3):
        async with http.post(url, b'{"q":%d}' % n, {**JSON, "Authorization": "Bearer sk-1"}, FAST) as response:
            assert response.status == 200
            assert response.headers["retry-after"] == "3"
            assert await response.read() == b'{"n":%d}' % n
    assert [body for body, _ in seen] == [b'{"q":1}', b'{"q":2}', b'{"q":3}']
    headers = seen[0][1]
    assert headers["Authorization"] == "Bearer sk-1"
    assert headers["Content-Type"] == "application/json"
    assert headers["Host"] == url.split("/")[2]
    assert len(set(peers)) == 1, "one keep-alive connection carried all three"


async def test_streams_chunked_lines_as_they_arrive(
    aiohttp_server: Callable[..., Awaitable[object]], http: UpstreamHttp
) -> None:
    release = asyncio.Event()

    async def sse(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: one\n\ndata: tw")
        await release.wait()
        await response.write(b"o\n\ndata: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/x", sse)
    url = await _app_server(aiohttp_server, app)
    async with http.post(url, b"{}", JSON, FAST) as response:
        lines = response.lines()
        assert [await anext(lines), await anext(lines)] == [b"data: one", b""]  # before the rest is sent
        release.set()
        assert [line async for line in lines] == [b"data: two", b"", b"data: [DONE]", b""]


async def test_decodes_gzip_bodies(aiohttp_server: Callable[..., Awaitable[object]], http: UpstreamHttp) -> None:
    payload = b'{"embedding":[' + b"0.125," * 20_000 + b"1]}"

    async def zipped(request: web.Request) -> web.Response:
        assert "gzip" in request.headers["Accept-Encoding"]
        return web.Response(body=gzip.compress(payload), headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_post("/v1/x", zipped)
    url = await _app_server(aiohttp_server, app)
    async with http.post(url, b"{}", JSON, FAST) as response:
        assert await response.read() == payload


async def test_large_bodies_both_ways(aiohttp_server: Callable[..., Awaitable[object]], http: UpstreamHttp) -> None:
    """8 MiB up and down: the socket pauses while the reader lags and resumes as it reads."""

    async def mirror(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(body), 1 << 20):
            await response.write(body[start : start + (1 << 20)])
        await response.write_eof()
        return response

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/v1/x", mirror)
    url = await _app_server(aiohttp_server, app)
    body = bytes(range(256)) * (32 << 10)
    async with http.post(url, body, JSON, FAST) as response:
        assert await response.read() == body
    lines = (b"x" * 999 + b"\n") * (8 << 10)
    async with http.post(url, lines, JSON, FAST) as response:
        got = [line async for line in response.lines()]
    assert got == [b"x" * 999] * (8 << 10)


async def test_tls_upstreams_are_verified(http: UpstreamHttp) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=b"secure")

    app = web.Application()
    app.router.add_post("/v1/x", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "localhost", 0, ssl_context=server_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"https://localhost:{port}/v1/x"
    try:
        with pytest.raises(UpstreamHttpError, match="SSLCertVerificationError"):
            async with http.post(url, b"{}", JSON, FAST):
                pass
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        trusting = UpstreamHttp(ssl_context=client_context)
        try:
            async with trusting.post(url, b"{}", JSON, FAST) as response:
                assert await response.read() == b"secure"
        finally:
            await trusting.close()
    finally:
        await runner.cleanup()


async def test_a_body_delimited_by_close_and_a_closed_connection_is_not_reused(http: UpstreamHttp) -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
    async with _raw_server(_answer_and_close(reply)) as served:
        for _ in range(2):
            async with http.post(served.url, b"{}", JSON, FAST) as response:
                assert await response.read() == b"until the end"
    assert served.connections == 2


async def _post_twice(http: UpstreamHttp, url: str, answer: bytes, *, pause: float) -> None:
    """Two POSTs to `url`, `pause` seconds apart, each answered with `answer`."""
    for _ in range(2):
        async with http.post(url, b"{}", JSON, FAST) as response:
            assert await response.read() == answer
        await asyncio.sleep(pause)


async def test_an_idle_connection_the_server_closed_is_replaced(http: UpstreamHttp) -> None:

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()  # the server's keep-alive timeout, after the answer

    async with _raw_server(script) as served:
        await _post_twice(http, served.url, b"ok", pause=0.2)
    assert served.connections == 2


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "connection closed before the response ended"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "connection closed before"),
        (b"SMTP ready\r\n\r\n", "invalid HTTP response"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\nxx", "unsupported content encoding"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope", "does not decompress"),
        (b"", "connection closed before the response ended"),
    ],
)
async def test_broken_answers_are_errors(http: UpstreamHttp, reply: bytes, reason: str) -> None:
    async with _raw_server(_answer_and_close(reply)) as served:
        with pytest.raises(UpstreamHttpError, match=reason):
            async with http.post(served.url, b"{}", JSON, FAST) as response:
                await response.read()


async def test_informational_heads_are_skipped(http: UpstreamHttp) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)  # the real head comes later
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone")
        await writer.drain()

    async with _raw_server(script) as served, http.post(served.url, b"{}", JSON, FAST) as response:
        assert (response.status, await response.read()) == (201, b"done")
        assert "link" not in response.headers


async def test_timeouts(http: UpstreamHttp) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            writer.write(b".")
            await writer.drain()
            await asyncio.sleep(0.05)

    for script, timeouts in ((silent, Timeouts(2.0, read=0.2)), (trickle, Timeouts(2.0, read=1.0, total=0.3))):
        async with _raw_server(script) as served:
            started = asyncio.get_running_loop().time()
            with pytest.raises(TimeoutError):
                async with http.post(served.url, b"{}", JSON, timeouts) as response:
                    await response.read()
            assert asyncio.get_running_loop().time() - started < 1.0


async def test_unreachable_and_bad_requests(http: UpstreamHttp, unused_tcp_port: int) -> None:
    with pytest.raises(UpstreamHttpError, match="connect: ConnectionRefusedError"):
        async with http.post(f"http://127.0.0.1:{unused_tcp_port}/v1", b"{}", JSON, FAST):
            pass
    with pytest.raises(UpstreamHttpError, match="line break"):
        async with http.post(f"http://127.0.0.1:{unused_tcp_port}/v1", b"{}", {"X-Key": "a\r\nInjected: 1"}, FAST):
            pass
    with pytest.raises(UpstreamHttpError, match="not an http"):
        async with http.post("ftp://example.com/v1", b"{}", JSON, FAST):
            pass


def _in_two_parts(first: bytes, rest: bytes | None) -> Script:
    """A script answering every request on its connection with `first`, then `rest` (if any) 50 ms later."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            writer.write(first)
            await writer.drain()
            await asyncio.sleep(0.05)
            if rest is not None:
                writer.write(rest)
                await writer.drain()

    return script


async def test_a_response_left_unread_closes_its_connection(http: UpstreamHttp) -> None:
    """A caller that leaves with an exception (a cancelled stream) cannot leave half a response for the next
    request."""

    script = _in_two_parts(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\none\n\r\n", b"4\r\ntwo\n\r\n0\r\n\r\n"
    )

    async def leave_mid_stream(url: str) -> None:
        async with http.post(url, b"{}", JSON, FAST) as response, aclosing(response.lines()) as lines:
            assert await anext(lines) == b"one"
            raise asyncio.CancelledError  # as when the gateway's caller goes away mid-stream

    async with _raw_server(script) as served:
        with pytest.raises(asyncio.CancelledError):
            await leave_mid_stream(served.url)
        async with http.post(served.url, b"{}", JSON, FAST) as response:
            assert await response.read() == b"one\ntwo\n"
    assert served.connections == 2


@pytest.mark.parametrize(("ends", "connections"), [(True, 1), (False, 2)])
async def test_a_stream_left_at_its_end_marker_keeps_its_connection_when_the_body_ends_soon(
    http: UpstreamHttp, monkeypatch: pytest.MonkeyPatch, ends: bool, connections: int
) -> None:
    """A provider stops reading at `data: [DONE]`; the chunked body's end often follows in a packet of its own."""
    monkeypatch.setattr(upstream_http, "_DRAIN_SECONDS", 0.2)

    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nE\r\ndata: [DONE]\n\n\r\n"
    script = _in_two_parts(head, b"0\r\n\r\n" if ends else None)

    async with _raw_server(script) as served:
        for _ in range(2):
            async with http.post(served.url, b"{}", JSON, FAST) as response:
                async for line in response.lines():
                    if line == b"data: [DONE]":
                        break
            await asyncio.sleep(0.3)
    assert served.connections == connections


async def test_a_reader_that_lags_pauses_the_socket(http: UpstreamHttp) -> None:
    """The body is not buffered without bound in the engine: the server's writes wait while nobody reads."""
    size, written = 64 << 20, 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size >> 20):
            writer.write(b"\n" * (1 << 20))
            await writer.drain()
            written += 1 << 20

    async with _raw_server(script) as served, http.post(served.url, b"{}", JSON, Timeouts(2.0, read=5.0)) as response:
        await asyncio.sleep(0.5)
        assert written < size // 2, "the server got rid of the whole body although nobody read it"
        assert len(await response.read()) == size


async def test_a_connection_that_answers_twice_is_not_reused(http: UpstreamHttp) -> None:

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none" * 2)
            await writer.drain()

    async with _raw_server(script) as served:
        await _post_twice(http, served.url, b"one", pause=0.05)
    assert served.connections == 2


async def test_an_endless_line_is_an_error(http: UpstreamHttp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream_http, "_LINE_LIMIT", 1 << 20)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"10000\r\n" + b"x" * 0x10000 + b"\r\n")
            await writer.drain()

    async with _raw_server(script) as served, http.post(served.url, b"{}", JSON, FAST) as response:
        with pytest.raises(UpstreamHttpError, match="a line longer than 1 MiB"):
            async for _ in response.lines():
                pass
