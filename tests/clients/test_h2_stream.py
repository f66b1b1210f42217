"""clients.h2_stream against a real grpc.aio server (messages larger than the windows and frames, statuses with
details, cancellation, a server going away) and a scripted HTTP/2 server for what grpc never sends (CONTINUATION,
padding, tiny windows, broken frames, silence)."""

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
import hpack
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from clients import h2_stream
from clients.h2_stream import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    SETTINGS,
    WINDOW_UPDATE,
    GrpcStream,
    frame,
)

OK = grpc.StatusCode.OK.value[0]


@dataclass
class Call:
    """A GrpcStream and what it delivered."""

    stream: GrpcStream
    messages: list[bytes] = field(default_factory=list)
    ended: asyncio.Future[status_pb2.Status] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def end(self) -> status_pb2.Status:
        return await asyncio.wait_for(self.ended, 10)

    async def message(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()


async def _open(address: str | tuple[str, int], path: str = "/test.Echo/Go", max_message: int = 64 << 20) -> Call:
    holder: list[Call] = []

    def on_message(data: bytes) -> None:
        holder[0].messages.append(data)
        holder[0].arrived.set()

    def on_end(status: status_pb2.Status) -> None:
        assert not holder[0].ended.done(), "the end is delivered once"
        holder[0].ended.set_result(status)

    call = Call(GrpcStream(path, "localhost", on_message, on_end, max_message=max_message))
    holder.append(call)
    await h2_stream.connect(call.stream, address)
    return call


# A real grpc.aio server


@dataclass
class _Echo:
    """How the echo handler behaves for the next call."""

    stop_after: int = 0  # end OK after this many messages (0: echo until the client goes away)
    abort: status_pb2.Status | None = None  # end with this status after the first message
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # the server has seen the call end


@asynccontextmanager
async def _grpc_server() -> AsyncIterator[tuple[str, _Echo, grpc.aio.Server]]:
    echo = _Echo()

    async def handle(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        context.add_done_callback(lambda _: echo.ended.set())
        seen = 0
        async for message in requests:
            if echo.abort is not None:
                await context.abort_with_status(rpc_status.to_status(echo.abort))
            yield message
            seen += 1
            if seen == echo.stop_after:
                return

    handler = grpc.stream_stream_rpc_method_handler(handle)
    limit = [("grpc.max_receive_message_length", 8 << 20), ("grpc.max_send_message_length", 8 << 20)]
    server = grpc.aio.server(options=limit)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {"Go": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", echo, server
    finally:
        await server.stop(None)


def _address(target: str) -> tuple[str, int]:
    host, port = target.rsplit(":", 1)
    return host, int(port)


async def test_messages_larger_than_the_windows_and_frames_go_both_ways_in_order() -> None:
    async with _grpc_server() as (target, echo, _):
        echo.stop_after = 4
        call = await _open(_address(target))
        # 5 MiB: more than the engine's first window and ours, many frames
        sent = [b"a", bytes(range(256)) * (20 << 10), b"", b"z" * 70_000]
        for message in sent:
            call.stream.send(message)
        status = await call.end()
        assert status.code == OK
        assert call.messages == sent


async def test_a_failed_call_ends_with_its_code_message_and_details() -> None:
    info = error_details_pb2.ErrorInfo(reason="BUDGET_EXCEEDED", domain="chittycan")
    detail = any_pb2.Any()
    detail.Pack(info)
    failure = status_pb2.Status(
        code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message="Größe: 100% spent\n", details=[detail]
    )
    async with _grpc_server() as (target, echo, _):
        echo.abort = failure
        call = await _open(_address(target))
        call.stream.send(b"x")
        assert await call.end() == failure


async def test_an_unknown_method_ends_unimplemented() -> None:
    async with _grpc_server() as (target, _, _server):
        call = await _open(_address(target), path="/test.Echo/Nope")
        status = await call.end()
        assert status.code == grpc.StatusCode.UNIMPLEMENTED.value[0]


async def test_a_message_over_the_limit_ends_the_call() -> None:
    async with _grpc_server() as (target, echo, _):
        call = await _open(_address(target), max_message=1000)
        call.stream.send(b"x" * 999)
        await call.message(1)
        call.stream.send(b"x" * 1001)
        status = await call.end()
        assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert "1001 vs. 1000" in status.message
        await asyncio.wait_for(echo.ended.wait(), 10)


async def test_cancel_ends_the_call_at_both_ends() -> None:
    async with _grpc_server() as (target, echo, _):
        call = await _open(_address(target))
        call.stream.send(b"x")
        await call.message(1)
        call.stream.cancel()
        assert (await call.end()).code == grpc.StatusCode.CANCELLED.value[0]
        await asyncio.wait_for(echo.ended.wait(), 10)
        call.stream.send(b"after")  # ignored


async def test_a_server_that_goes_away_ends_the_call_unavailable() -> None:
    async with _grpc_server() as (target, _, server):
        call = await _open(_address(target))
        call.stream.send(b"x")
        await call.message(1)
        await server.stop(None)
        status = await call.end()
        assert status.code in (grpc.StatusCode.UNAVAILABLE.value[0], grpc.StatusCode.CANCELLED.value[0])


async def test_no_server_ends_the_call_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    call = await _open(("127.0.0.1", port))
    status = await call.end()
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "Cannot reach the engine" in status.message


@pytest.mark.parametrize(
    ("target", "dialled"),
    [
        ("unix:/run/engine.sock", ("localhost", "/run/engine.sock")),
        ("unix:///run/engine.sock", ("localhost", "/run/engine.sock")),
        ("unix:engine.sock", ("localhost", "engine.sock")),
        ("127.0.0.1:50051", ("127.0.0.1:50051", ("127.0.0.1", 50051))),
        ("[::1]:50051", ("[::1]:50051", ("::1", 50051))),
        ("engine.internal:443", ("engine.internal:443", ("engine.internal", 443))),
        ("dns:///engine:50051", None),
        ("ipv4:10.0.0.1:1,10.0.0.2:1", None),
        ("::1:50051", None),
        ("unix:", None),
        ("engine", None),
    ],
)
def test_targets_it_dials_and_those_it_leaves_to_grpc(target: str, dialled: object) -> None:
    assert h2_stream.dial_target(target) == dialled


# A scripted HTTP/2 server

Script = Callable[["_Peer"], Awaitable[None]]
_FRAME = struct.Struct(">BBI")


class _Peer:
    """The server's side of one connection: reads the client's frames, writes frames of the script's making."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.encoder = hpack.Encoder()

    async def preface(self, settings: bytes = b"") -> None:
        """Read the client's preface, SETTINGS, WINDOW_UPDATE and HEADERS; send our SETTINGS."""
        assert await self.reader.readexactly(len(h2_stream.PREFACE)) == h2_stream.PREFACE
        kinds = [(await self.read_frame())[0] for _ in range(3)]
        assert kinds == [SETTINGS, WINDOW_UPDATE, HEADERS]
        self.writer.write(frame(SETTINGS, 0, 0, settings))

    async def read_frame(self) -> tuple[int, int, int, bytes]:
        head = await self.reader.readexactly(9)
        length = int.from_bytes(head[:3], "big")
        kind, flags, stream_id = _FRAME.unpack(head[3:])
        return kind, flags, stream_id, await self.reader.readexactly(length)

    async def until(self, kind: int) -> tuple[int, int, bytes]:
        """Frames until one of `kind`: its flags, stream and payload."""
        while True:
            got, flags, stream_id, payload = await self.read_frame()
            if got == kind:
                return flags, stream_id, payload

    def headers(self, headers: list[tuple[str, str]], flags: int = END_HEADERS) -> bytes:
        return frame(HEADERS, flags, 1, self.encoder.encode(headers))

    def ok_headers(self) -> bytes:
        return self.headers([(":status", "200"), ("content-type", "application/grpc")])

    def trailers(self, code: int = 0, message: str = "") -> bytes:
        entries = [("grpc-status", str(code))] + ([("grpc-message", message)] if message else [])
        return self.headers(entries, END_HEADERS | END_STREAM)


def _message(data: bytes, compressed: int = 0) -> bytes:
    return bytes([compressed]) + len(data).to_bytes(4, "big") + data


@asynccontextmanager
async def _scripted(script: Script) -> AsyncIterator[tuple[str, int]]:
    failures: list[BaseException] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(_Peer(reader, writer))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except BaseException as err:  # noqa: BLE001 - reported by the test
            failures.append(err)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield "127.0.0.1", server.sockets[0].getsockname()[1]
    finally:
        server.close()
    assert not failures, failures


async def test_continuation_padding_and_split_messages_are_read_whole() -> None:
    async def script(peer: _Peer) -> None:
        await peer.preface()
        block = peer.encoder.encode([(":status", "200"), ("content-type", "application/grpc+proto")])
        padded = bytes([3]) + block[:2] + bytes(3)
        peer.writer.write(frame(HEADERS, PADDED, 1, padded) + frame(CONTINUATION, END_HEADERS, 1, block[2:]))
        stream = _message(b"one") + _message(b"two") + _message(b"three" * 10)
        peer.writer.write(frame(DATA, 0, 1, stream[:4]) + frame(DATA, PADDED, 1, bytes([2]) + stream[4:30] + b"\0\0"))
        peer.writer.write(frame(DATA, 0, 1, stream[30:]) + peer.trailers())

    async with _scripted(script) as address:
        call = await _open(address)
        assert (await call.end()).code == OK
        assert call.messages == [b"one", b"two", b"three" * 10]


async def test_pings_and_settings_are_acknowledged() -> None:
    async def script(peer: _Peer) -> None:
        await peer.preface()
        flags, _, _ = await peer.until(SETTINGS)
        assert flags == h2_stream.ACK
        peer.writer.write(frame(PING, 0, 0, b"12345678"))
        flags, _, payload = await peer.until(PING)
        assert (flags, payload) == (h2_stream.ACK, b"12345678")
        peer.writer.write(peer.ok_headers() + peer.trailers())

    async with _scripted(script) as address:
        assert (await (await _open(address)).end()).code == OK


async def test_sending_waits_for_the_peers_windows_and_respects_its_frame_size() -> None:
    size = 100_000

    async def received(peer: _Peer, total: int) -> bytes:
        data = b""
        while len(data) < total:
            _, _, payload = await peer.until(DATA)
            assert len(payload) <= h2_stream.DEFAULT_FRAME
            data += payload
        assert len(data) == total
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(peer.until(DATA), 0.3)  # nothing more until a window opens
        return data

    async def script(peer: _Peer) -> None:
        await peer.preface(struct.pack(">HI", h2_stream.SETTINGS_INITIAL_WINDOW_SIZE, 10))
        await peer.until(SETTINGS)  # the client's acknowledgement
        peer.writer.write(peer.ok_headers() + frame(DATA, 0, 1, _message(b"go")))
        data = await received(peer, 10)  # the stream's window
        peer.writer.write(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1 << 20)))
        data += await received(peer, h2_stream.DEFAULT_WINDOW - 10)  # then the connection's
        peer.writer.write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 20)))
        rest = 5 + size - h2_stream.DEFAULT_WINDOW
        while rest:
            _, _, payload = await peer.until(DATA)
            data += payload
            rest -= len(payload)
        assert data == _message(b"m" * size)
        peer.writer.write(peer.trailers())

    async with _scripted(script) as address:
        call = await _open(address)
        await call.message(1)  # the client has the server's settings by now
        call.stream.send(b"m" * size)
        assert (await call.end()).code == OK


_TRAILERS_ONLY = [
    (":status", "200"),
    ("content-type", "application/grpc"),
    ("grpc-status", "5"),
    ("grpc-message", "no%20such%20thing"),
]


@pytest.mark.parametrize(
    ("answer", "code", "says"),
    [
        (lambda p: p.headers([(":status", "503")], END_HEADERS | END_STREAM), grpc.StatusCode.UNAVAILABLE, "503"),
        (lambda p: p.headers([(":status", "200"), ("content-type", "text/html")]), grpc.StatusCode.UNKNOWN, "not gRPC"),
        (
            lambda p: p.ok_headers() + frame(DATA, 0, 1, _message(b"x", compressed=1)),
            grpc.StatusCode.INTERNAL,
            "compressed",
        ),
        (lambda p: p.ok_headers() + frame(DATA, 0, 3, _message(b"x")), grpc.StatusCode.INTERNAL, "protocol error"),
        (lambda p: frame(DATA, 0, 1, _message(b"x")), grpc.StatusCode.INTERNAL, "before the response headers"),
        (
            lambda p: p.headers([(":status", "200")], 0) + frame(DATA, 0, 1, _message(b"x")),
            grpc.StatusCode.INTERNAL,
            "header block was interrupted",
        ),
        (lambda p: p.ok_headers() + frame(DATA, END_STREAM, 1, b""), grpc.StatusCode.INTERNAL, "without trailers"),
        (
            lambda p: p.ok_headers() + frame(h2_stream.RST_STREAM, 0, 1, bytes(3) + b"\x07"),
            grpc.StatusCode.UNAVAILABLE,
            "reset",
        ),
        (lambda p: frame(GOAWAY, 0, 0, bytes(8)), grpc.StatusCode.UNAVAILABLE, "going away"),
        (lambda p: p.headers(_TRAILERS_ONLY, END_HEADERS | END_STREAM), grpc.StatusCode.NOT_FOUND, "no such thing"),
        (lambda p: b"", grpc.StatusCode.UNAVAILABLE, "closed the connection"),
    ],
    ids=[
        "http-503",
        "not-grpc",
        "compressed",
        "wrong-stream",
        "data-first",
        "interrupted-block",
        "no-trailers",
        "reset",
        "goaway",
        "trailers-only",
        "closed",
    ],
)
async def test_broken_or_refused_answers_end_the_call_with_a_status(
    answer: Callable[[_Peer], bytes], code: grpc.StatusCode, says: str
) -> None:
    async def script(peer: _Peer) -> None:
        await peer.preface()
        peer.writer.write(answer(peer))
        await peer.writer.drain()
        await asyncio.sleep(0.2)

    async with _scripted(script) as address:
        status = await (await _open(address)).end()
        assert status.code == code.value[0]
        assert says in status.message


async def test_data_beyond_the_window_given_ends_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h2_stream, "RECEIVE_WINDOW", 70_000)
    monkeypatch.setattr(h2_stream, "ACKNOWLEDGE_AT", 1 << 30)  # no acknowledgement opens it again

    async def script(peer: _Peer) -> None:
        await peer.preface()
        peer.writer.write(peer.ok_headers())
        for _ in range(5):  # 80,000 bytes
            peer.writer.write(frame(DATA, 0, 1, bytes(16_000)))
        await peer.until(GOAWAY)  # or the connection closes under it, unread data making it a reset

    async with _scripted(script) as address:
        status = await (await _open(address)).end()
        assert status.code == grpc.StatusCode.INTERNAL.value[0]
        assert "beyond the window" in status.message


async def test_a_silent_engine_is_pinged_and_then_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h2_stream, "KEEPALIVE", 0.2)
    monkeypatch.setattr(h2_stream, "KEEPALIVE_TIMEOUT", 0.3)
    pings: list[bytes] = []

    async def answering(peer: _Peer) -> None:
        await peer.preface()
        peer.writer.write(peer.ok_headers())
        for _ in range(3):
            _, _, payload = await peer.until(PING)
            pings.append(payload)
            peer.writer.write(frame(PING, h2_stream.ACK, 0, payload))
        peer.writer.write(peer.trailers())

    async with _scripted(answering) as address:
        assert (await (await _open(address)).end()).code == OK  # three pings answered: alive throughout
    assert len(pings) == 3

    async def silent(peer: _Peer) -> None:
        await peer.preface()
        peer.writer.write(peer.ok_headers())
        await peer.until(PING)
        await asyncio.sleep(5)

    async with _scripted(silent) as address:
        status = await (await _open(address)).end()
        assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert "keepalive" in status.message
