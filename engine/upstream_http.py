"""The engine's HTTP/1.1 client for upstream calls: keep-alive connections per origin, responses parsed by
httptools (llhttp, the parser Node.js uses).

It replaces aiohttp's client on the path of every uncached call. aiohttp's spent 70-110 us more per call here
(request and response objects, a task for each body write, timers) than a bare asyncio protocol; this one spends
10-25 us more (bench/README, "The upstream client"). A host's addresses are raced as RFC 8305 says
(aiohappyeyeballs, as aiohttp does). What upstream APIs do not need is left out:
redirects, proxies, cookies, HTTP/2 and request bodies sent in pieces. Response bodies may be sized, chunked or
delimited by the connection's close, and gzip or deflate encoded.
"""

import asyncio
import functools
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import cast
from urllib.parse import urlsplit

import aiohappyeyeballs
import httptools

from chittycan.exchange_batches import MESSAGE_LIMIT

USER_AGENT = "chittycan"
_ACCEPT_ENCODING = "gzip, deflate"
_PAUSE_BYTES = 1 << 20  # a body buffered this far ahead of its reader pauses the socket
_LINE_LIMIT = MESSAGE_LIMIT  # an event on a longer line could not cross the hop to the facade anyway
_IDLE_PER_ORIGIN = 64
_DRAIN_SECONDS = 1.0  # how long the end of a body its reader left early may take to arrive and save the connection
_GZIP_OR_ZLIB = 32 + zlib.MAX_WBITS
_HAPPY_EYEBALLS_DELAY = 0.25  # RFC 8305's recommended wait before racing the next address


class UpstreamHttpError(Exception):
    """The upstream could not be reached, broke the connection, or did not answer in HTTP/1.1; the message is a
    short reason that names no secret."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """`connect` bounds opening a connection (TLS included); `read` the wait for the response's head and then
    for each next piece of its body; `total`, when set, the whole exchange."""

    connect: float
    read: float
    total: float | None = None


@dataclass(frozen=True, slots=True)
class _Origin:
    host: str
    port: int
    tls: bool


@dataclass(frozen=True, slots=True)
class _Target:
    origin: _Origin
    head: str  # request line and Host header


@functools.lru_cache(maxsize=256)
def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamHttpError(f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
    tls = parts.scheme == "https"
    origin = _Origin(parts.hostname, parts.port or (443 if tls else 80), tls)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc.rpartition("@")[2]
    return _Target(origin, f"POST {path} HTTP/1.1\r\nHost: {host}\r\n")


class UpstreamResponse:
    """One response: `status`, `headers` (names lower-cased, repeated ones joined with ", "), and the body read
    whole (`read`) or line by line (`lines`)."""

    def __init__(self, connection: "_Connection", timeouts: Timeouts, deadline: float | None) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._connection = connection
        self._read_timeout = timeouts.read
        self._deadline = deadline
        self._pieces: list[bytes] = []
        self._buffered = 0
        self._decoder: zlib._Decompress | None = None
        self._head_done = False
        self.complete = False
        self.reusable = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # Called by the connection as the parser goes.
    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.status, self.headers, self._head_done = status, headers, True
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._decoder = zlib.decompressobj(_GZIP_OR_ZLIB)
        elif encoding != "identity":
            self._fail(UpstreamHttpError(f"unsupported content encoding {encoding[:40]!r}"))
            return
        self._wake()

    def _body(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error:
                self._fail(UpstreamHttpError("a body that does not decompress"))
                return
        if data:
            self._pieces.append(data)
            self._buffered += len(data)
            if self._buffered > _PAUSE_BYTES:
                self._connection.pause_reading()
            self._wake()

    def _end(self, keep_alive: bool) -> None:
        if self._decoder is not None and (rest := self._decoder.flush()):
            self._pieces.append(rest)
        self.complete, self.reusable = True, keep_alive
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self.complete and self._error is None:
            self._error = error
            self._connection.close()
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self) -> None:
        """Until the connection reports progress; TimeoutError after the read timeout (or the deadline)."""
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        timeout = self._read_timeout
        if self._deadline is not None:
            timeout = min(timeout, self._deadline - loop.time())
        self._waiter = loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    async def _wait_head(self) -> None:
        while not self._head_done:
            await self._wait()

    def _take(self) -> bytes:
        data = b"".join(self._pieces) if len(self._pieces) != 1 else self._pieces[0]
        self._pieces.clear()
        if self._buffered > _PAUSE_BYTES:
            self._connection.resume_reading()
        self._buffered = 0
        return data

    async def read(self) -> bytes:
        """The whole (decoded) body."""
        parts = []
        while not self.complete:
            if self._buffered > _PAUSE_BYTES:
                parts.append(self._take())
            await self._wait()
        parts.append(self._take())
        return b"".join(parts) if len(parts) > 1 else parts[0]

    async def lines(self) -> AsyncIterator[bytes]:
        """The body's lines as they arrive, without their "\\n" (a last line without one included)."""
        pending = b""
        while True:
            if self._pieces:
                *whole, pending = (pending + self._take()).split(b"\n")
                for line in whole:
                    yield line
                if len(pending) > _LINE_LIMIT:
                    self._fail(UpstreamHttpError(f"a line longer than {_LINE_LIMIT >> 20} MiB"))
            elif self.complete:
                if pending:
                    yield pending
                return
            else:
                await self._wait()


class _Connection(asyncio.Protocol):
    """One keep-alive connection, carrying one request at a time."""

    def __init__(self, origin: _Origin, forget: Callable[["_Connection"], None]) -> None:
        self.origin = origin
        self.idle_since = 0.0
        self.open = False
        self._forget = forget
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._response: UpstreamResponse | None = None
        self._headers: dict[str, str] = {}

    def send(self, data: bytes, response: UpstreamResponse) -> None:
        assert self._transport is not None
        self._response = response
        self._headers = {}
        self._transport.write(data)

    def release(self) -> bool:
        """The response is done with: True when the connection can carry another request."""
        response, self._response = self._response, None
        if response is not None and response.complete and response.reusable and self.open:
            return True
        self.close()
        return False

    def close(self) -> None:
        self.open = False
        if self._transport is not None:
            self._transport.close()

    def pause_reading(self) -> None:
        if self._transport is not None and self._transport.is_reading():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and self.open and not self._transport.is_reading():
            self._transport.resume_reading()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport
        self.open = True

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None:  # bytes nobody asked for: the connection is out of step
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response._fail(UpstreamHttpError(f"invalid HTTP response: {exc}"))

    def eof_received(self) -> bool:
        self._closed_by_peer()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed_by_peer()
        self._forget(self)

    def _closed_by_peer(self) -> None:
        self.open = False
        response = self._response
        if response is None or response.complete:
            return
        headers = self._headers
        if (
            response._head_done
            and "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "")
        ):
            response._end(keep_alive=False)  # a body delimited by the connection's close
        else:
            response._fail(UpstreamHttpError("connection closed before the response ended"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._headers = {}
        if self._response is not None and self._response.complete:  # a second answer to one request
            self._response = None  # the first one stands; the connection is not trusted again
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status >= 200 and self._response is not None:  # 1xx heads are followed by the real one
            self._response._head(status, self._headers)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response._body(body)

    def on_message_complete(self) -> None:
        response = self._response
        if response is not None and response._head_done and not response.complete:
            response._end(self._parser.should_keep_alive())


class _Exchange:
    """`async with client.post(...) as response`: the connection goes back to the pool (or is closed) at exit."""

    def __init__(self, client: "UpstreamHttp", url: str, body: bytes, headers: Mapping[str, str], timeouts: Timeouts):
        self._client = client
        self._args = (url, body, headers, timeouts)
        self._response: UpstreamResponse | None = None

    async def __aenter__(self) -> UpstreamResponse:
        self._response = await self._client._send(*self._args)
        return self._response

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        response = self._response
        if response is None:
            return
        if exc_type is None and not response.complete and response._error is None:
            self._client._drain_later(response)  # a stream read up to its end marker: the body's end is near
        else:
            self._client._release(response._connection)


class UpstreamHttp:
    """Keep-alive HTTP/1.1 connections to upstreams, reused most recent first; one idling longer than
    `keepalive_seconds` is closed instead of reused. `ssl_context` verifies TLS upstreams (the system's CAs by
    default)."""

    def __init__(self, *, keepalive_seconds: float = 60.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self._keepalive = keepalive_seconds
        self._ssl = ssl_context
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._connections: set[_Connection] = set()
        self._draining: set[asyncio.Task[None]] = set()

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeouts: Timeouts) -> _Exchange:
        """POST `body` with `headers` (Host, Content-Length, Accept-Encoding and User-Agent are added)."""
        return _Exchange(self, url, body, headers, timeouts)

    async def close(self) -> None:
        """Close every connection."""
        for task in self._draining:
            task.cancel()
        for connection in list(self._connections):
            connection.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports run connection_lost

    async def _send(self, url: str, body: bytes, headers: Mapping[str, str], timeouts: Timeouts) -> UpstreamResponse:
        target = _target(url)
        data = _request_bytes(target, headers, body)
        loop = asyncio.get_running_loop()
        deadline = None if timeouts.total is None else loop.time() + timeouts.total
        connection = self._reuse(target.origin, loop.time()) or await self._connect(target.origin, timeouts, deadline)
        response = UpstreamResponse(connection, timeouts, deadline)
        connection.send(data, response)
        try:
            await response._wait_head()
        except BaseException:
            self._release(connection)
            raise
        return response

    def _reuse(self, origin: _Origin, now: float) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.open and now - connection.idle_since < self._keepalive:
                return connection
            connection.close()
        return None

    async def _connect(self, origin: _Origin, timeouts: Timeouts, deadline: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        timeout = timeouts.connect if deadline is None else min(timeouts.connect, deadline - loop.time())
        tls: ssl.SSLContext | None = None
        if origin.tls:
            tls = self._ssl = self._ssl or ssl.create_default_context()
        try:
            async with asyncio.timeout(timeout):
                addresses = await loop.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
                sock = await aiohappyeyeballs.start_connection(addresses, happy_eyeballs_delay=_HAPPY_EYEBALLS_DELAY)
                try:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(origin, self._connections.discard),
                        sock=sock,
                        ssl=tls,
                        server_hostname=origin.host if tls else None,
                    )
                except BaseException:
                    sock.close()
                    raise
        except TimeoutError:
            raise  # an OSError too, but the caller reports it as a timeout
        except OSError as exc:  # refused, reset, unresolvable, TLS failures (ssl.SSLError is an OSError)
            raise UpstreamHttpError(f"connect: {type(exc).__name__}") from exc
        self._connections.add(connection)
        return connection

    def _drain_later(self, response: UpstreamResponse) -> None:
        """Read the rest of a body whose reader stopped early (an SSE stream's `[DONE]` usually comes just before
        the chunked body's end) in the background; pool the connection if it ends within _DRAIN_SECONDS."""

        async def drain() -> None:
            try:
                async with asyncio.timeout(_DRAIN_SECONDS):
                    while not response.complete:
                        response._take()
                        await response._wait()
            except (TimeoutError, UpstreamHttpError):
                pass
            finally:
                self._release(response._connection)

        task = asyncio.get_running_loop().create_task(drain())
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    def _release(self, connection: _Connection) -> None:
        if not connection.release():
            return
        idle = self._idle.setdefault(connection.origin, [])
        if len(idle) >= _IDLE_PER_ORIGIN:
            connection.close()
            return
        connection.idle_since = asyncio.get_running_loop().time()
        idle.append(connection)


def _request_bytes(target: _Target, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [target.head]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise UpstreamHttpError(f"request header {name[:40]!r} holds a line break")
        lines.append(f"{name}: {value}\r\n")
    lines.append(
        f"User-Agent: {USER_AGENT}\r\nAccept-Encoding: {_ACCEPT_ENCODING}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return "".join(lines).encode() + body
