"""One gRPC bidirectional stream on its own HTTP/2 connection, framed by hand on the event loop (RFC 9113, and
gRPC's HTTP/2 mapping), for the facade's Exchange stream to its engine.

Why not grpc.aio here: grpc.aio hands every message through a poller thread and a socket pair to the event
loop, two thread wake-ups per message on each side; reading and writing the socket from the loop saves ~70 µs per
round trip (bench/README.md, "The facade's exchange connection"). grpclib, and the `h2` state machine alone, cost
more Python per message than the wake-ups they save. The connection carries exactly one stream, opened with it,
so the client needs little of HTTP/2: the frames, both levels of flow control, SETTINGS, PING and GOAWAY. Header
blocks (one each way, plus the trailers) go through `hpack`. Everything else the engine serves, and any target
this module cannot dial, stays on grpc.aio.

`GrpcStream` delivers each whole message and then the stream's end (a google.rpc.Status, OK or not) to
callbacks; `send()` never blocks: what the peer's windows do not admit yet waits in the stream's buffer.
"""

import asyncio
import base64
import struct
import time
from collections.abc import Callable
from typing import cast
from urllib.parse import unquote

import grpc
import hpack
from google.rpc import status_pb2

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
STREAM_ID = 1
DEFAULT_WINDOW = 65_535
DEFAULT_FRAME = 16_384
# What this side lets the engine send before it acknowledges (sending more ends the connection); what it has
# parsed is acknowledged once that reaches ACKNOWLEDGE_AT.
RECEIVE_WINDOW = 4 << 20
ACKNOWLEDGE_AT = RECEIVE_WINDOW // 2
# A header block (headers or trailers) larger than this ends the connection.
MAX_HEADER_BLOCK = 64 << 10
CONNECT_TIMEOUT = 10.0
# With nothing heard for KEEPALIVE seconds, a PING goes out; no answer within KEEPALIVE_TIMEOUT ends the stream.
# The engine pings every 30 s itself (engine/server.py), so on a live connection this ping rarely goes out.
KEEPALIVE = 30.0
KEEPALIVE_TIMEOUT = 20.0

DATA, HEADERS, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 5, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 2, 4, 5
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, CANCEL, COMPRESSION_ERROR = 0x0, 0x1, 0x3, 0x6, 0x8, 0x9
REFUSED_STREAM, ENHANCE_YOUR_CALM, INADEQUATE_SECURITY = 0x7, 0xB, 0xC
MAX_WINDOW = (1 << 31) - 1

_U32 = struct.Struct(">I")
_SETTING = struct.Struct(">HI")
_CODE = {code: code.value[0] for code in grpc.StatusCode}
# gRPC's mapping of an HTTP status that is not 200 (doc/http-grpc-status-mapping.md).
_HTTP_CODES = {
    400: grpc.StatusCode.INTERNAL,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED,
    429: grpc.StatusCode.UNAVAILABLE,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}
# How an RST_STREAM error code ends the call (gRPC's PROTOCOL-HTTP2.md).
_RESET_CODES = {
    NO_ERROR: grpc.StatusCode.INTERNAL,
    REFUSED_STREAM: grpc.StatusCode.UNAVAILABLE,
    CANCEL: grpc.StatusCode.CANCELLED,
    ENHANCE_YOUR_CALM: grpc.StatusCode.RESOURCE_EXHAUSTED,
    INADEQUATE_SECURITY: grpc.StatusCode.PERMISSION_DENIED,
}


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame."""
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + _U32.pack(stream_id) + payload


def status(code: grpc.StatusCode, message: str) -> status_pb2.Status:
    """A google.rpc.Status for `code`."""
    return status_pb2.Status(code=_CODE[code], message=message)


class ProtocolError(Exception):
    """The peer broke HTTP/2 or gRPC framing; the connection ends with GOAWAY(`error_code`)."""

    def __init__(self, message: str, error_code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.error_code = error_code


class GrpcStream(asyncio.Protocol):
    """The client side of one gRPC call with streamed requests and responses on its own connection.

    `on_message(data)` gets each response message, `on_end(status)` the call's end once (OK when the engine
    ended the stream normally); nothing is delivered after that. Messages `send()` gets before the connection is
    up go out once it is.
    """

    def __init__(
        self,
        path: str,
        authority: str,
        on_message: Callable[[bytes], None],
        on_end: Callable[[status_pb2.Status], None],
        *,
        max_message: int,
    ) -> None:
        self._on_message = on_message
        self._on_end: Callable[[status_pb2.Status], None] | None = on_end
        self._max_message = max_message
        encoder = hpack.Encoder()
        self._request_headers = encoder.encode(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path),
                (":authority", authority),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("user-agent", "chittycan-exchange"),
            ]
        )
        self._decoder = hpack.Decoder()
        self._decoder.max_header_list_size = MAX_HEADER_BLOCK
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()  # received, not yet a whole frame
        self._message = bytearray()  # DATA payload, not yet a whole gRPC message
        self._block = bytearray()  # a header block awaiting its CONTINUATION frames
        self._in_block = False
        self._block_ends_stream = False
        self._headers_seen = False
        self._outgoing = bytearray()  # framed messages the peer's windows have not admitted yet
        self._connection_window = DEFAULT_WINDOW
        self._stream_window = self._initial_window = DEFAULT_WINDOW
        self._max_frame = DEFAULT_FRAME
        # What the engine may still send (the stream's and the connection's windows move together: one stream).
        self._receive_window = RECEIVE_WINDOW
        self._unacknowledged = 0
        self._half_closed = False
        self._heard = time.monotonic()
        self._keepalive: asyncio.TimerHandle | None = None
        self._ping_sent = 0.0

    @property
    def ended(self) -> bool:
        """True once the call's end has been delivered."""
        return self._on_end is None

    # The caller's side

    def send(self, message: bytes) -> None:
        """Send one request message (buffered until the windows admit it)."""
        if self.ended:
            return
        self._outgoing += b"\x00" + _U32.pack(len(message)) + message
        if self._transport is not None:
            self._flush()

    def cancel(self, message: str = "The client cancelled the call.") -> None:
        """End the call as CANCELLED (see `fail`)."""
        self.fail(grpc.StatusCode.CANCELLED, message)

    def fail(self, code: grpc.StatusCode, message: str) -> None:
        """End the call: RST_STREAM(CANCEL) tells the engine, the connection closes, `on_end` gets `code`."""
        self._write(frame(RST_STREAM, 0, STREAM_ID, _U32.pack(CANCEL)))
        self._end(status(code, message))

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses
        if self.ended:  # cancelled while connecting
            transport.close()
            return
        self._transport = transport
        settings = _SETTING.pack(SETTINGS_ENABLE_PUSH, 0) + _SETTING.pack(SETTINGS_INITIAL_WINDOW_SIZE, RECEIVE_WINDOW)
        transport.write(
            PREFACE
            + frame(SETTINGS, 0, 0, settings)
            + frame(WINDOW_UPDATE, 0, 0, _U32.pack(RECEIVE_WINDOW - DEFAULT_WINDOW))
            + frame(HEADERS, END_HEADERS, STREAM_ID, self._request_headers)
        )
        self._flush()
        self._heard = time.monotonic()
        self._keepalive = asyncio.get_running_loop().call_later(KEEPALIVE, self._check_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(status(grpc.StatusCode.UNAVAILABLE, "The engine closed the connection."))

    def connection_failed(self, exc: BaseException) -> None:
        """The connection could not be made."""
        self._end(status(grpc.StatusCode.UNAVAILABLE, f"Cannot reach the engine ({type(exc).__name__})."))

    def data_received(self, data: bytes) -> None:
        self._heard = time.monotonic()
        buffer = self._buffer
        buffer += data
        start = 0
        try:
            while len(buffer) - start >= 9 and not self.ended:
                length = int.from_bytes(buffer[start : start + 3], "big")
                if length > DEFAULT_FRAME:  # the largest frame this side allows (SETTINGS_MAX_FRAME_SIZE)
                    raise ProtocolError("frame too large", FRAME_SIZE_ERROR)
                end = start + 9 + length
                if len(buffer) < end:
                    break
                kind, flags = buffer[start + 3], buffer[start + 4]
                stream_id = _U32.unpack_from(buffer, start + 5)[0] & MAX_WINDOW
                payload = bytes(buffer[start + 9 : end])
                start = end
                self._frame(kind, flags, stream_id, payload)
        except ProtocolError as err:
            self._fail(err)
            return
        del buffer[:start]
        if self._unacknowledged >= ACKNOWLEDGE_AT and self._transport is not None:
            increment = _U32.pack(self._unacknowledged)
            self._transport.write(frame(WINDOW_UPDATE, 0, 0, increment) + frame(WINDOW_UPDATE, 0, STREAM_ID, increment))
            self._receive_window += self._unacknowledged
            self._unacknowledged = 0

    # Frames

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._in_block and kind != CONTINUATION:
            raise ProtocolError("a header block was interrupted")
        if kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == CONTINUATION:
            if not self._in_block or stream_id != STREAM_ID:
                raise ProtocolError("CONTINUATION without a header block")
            self._add_to_block(flags, payload)
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == PING:
            if len(payload) != 8:
                raise ProtocolError("PING payload is not 8 bytes", FRAME_SIZE_ERROR)
            if not flags & ACK:
                self._write(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            if stream_id == STREAM_ID and len(payload) == 4:
                code = _U32.unpack(payload)[0]
                self._end(
                    status(_RESET_CODES.get(code, grpc.StatusCode.INTERNAL), f"The engine reset the stream ({code}).")
                )
        elif kind == GOAWAY:
            if len(payload) < 8:
                raise ProtocolError("GOAWAY too short", FRAME_SIZE_ERROR)
            if _U32.unpack_from(payload)[0] & MAX_WINDOW < STREAM_ID:
                self._end(status(grpc.StatusCode.UNAVAILABLE, "The engine is going away."))
        elif kind == PUSH_PROMISE:
            raise ProtocolError("PUSH_PROMISE though push is disabled")
        # Other frame types (PRIORITY, extensions) are ignored, as RFC 9113 says.

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        self._unacknowledged += len(payload)
        self._receive_window -= len(payload)
        if self._receive_window < 0:
            raise ProtocolError("DATA beyond the window this side gave", FLOW_CONTROL_ERROR)
        if stream_id != STREAM_ID:
            raise ProtocolError("DATA on a stream this side did not open")
        if not self._headers_seen:
            raise ProtocolError("DATA before the response headers")
        message = self._message
        message += _unpadded(flags, payload)
        while len(message) >= 5:
            if message[0] != 0:
                self.fail(grpc.StatusCode.INTERNAL, "The engine sent a compressed message.")
                return
            size = _U32.unpack_from(message, 1)[0]
            if size > self._max_message:
                self.fail(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"Received message larger than max ({size} vs. {self._max_message})",
                )
                return
            if len(message) < 5 + size:
                break
            data = bytes(message[5 : 5 + size])
            del message[: 5 + size]
            self._on_message(data)
            if self.ended:
                return
        if flags & END_STREAM:
            self._end(status(grpc.StatusCode.INTERNAL, "The engine ended the stream without trailers."))

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != STREAM_ID:
            raise ProtocolError("HEADERS on a stream this side did not open")
        payload = _unpadded(flags, payload)
        if flags & PRIORITY:
            payload = payload[5:]
        self._block_ends_stream = bool(flags & END_STREAM)
        self._add_to_block(flags, payload)

    def _add_to_block(self, flags: int, payload: bytes) -> None:
        self._block += payload
        if len(self._block) > MAX_HEADER_BLOCK:
            raise ProtocolError("header block too large")
        self._in_block = not flags & END_HEADERS
        if self._in_block:
            return
        block, self._block = bytes(self._block), bytearray()
        try:
            headers = dict(self._decoder.decode(block, raw=True))
        except hpack.HPACKError as err:
            raise ProtocolError(f"bad header block ({type(err).__name__})", COMPRESSION_ERROR) from None
        if not self._headers_seen:
            self._headers_seen = True
            http_status = headers.get(b":status", b"")
            if http_status != b"200":
                code = _HTTP_CODES.get(int(http_status) if http_status.isdigit() else 0, grpc.StatusCode.UNKNOWN)
                self.fail(code, f"The engine answered HTTP {http_status.decode('latin-1')}.")
                return
            if not headers.get(b"content-type", b"").startswith(b"application/grpc"):
                self.fail(grpc.StatusCode.UNKNOWN, "The engine's answer is not gRPC.")
                return
            if b"grpc-status" not in headers:  # response headers; the trailers follow
                if self._block_ends_stream:
                    self._end(status(grpc.StatusCode.INTERNAL, "The engine ended the stream without a status."))
                return
        elif not self._block_ends_stream:
            raise ProtocolError("trailers that do not end the stream")
        self._end(_trailer_status(headers))

    def _settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise ProtocolError("SETTINGS length is not a multiple of 6", FRAME_SIZE_ERROR)
        for offset in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, offset)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolError("initial window too large", FLOW_CONTROL_ERROR)
                self._stream_window += value - self._initial_window
                self._initial_window = value
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value < 1 << 24:
                    raise ProtocolError("bad maximum frame size")
                self._max_frame = value
        self._write(frame(SETTINGS, ACK, 0))
        self._flush()

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolError("WINDOW_UPDATE is not 4 bytes", FRAME_SIZE_ERROR)
        increment = _U32.unpack(payload)[0] & MAX_WINDOW
        if increment == 0:
            raise ProtocolError("WINDOW_UPDATE of 0")
        if stream_id == 0:
            self._connection_window += increment
            if self._connection_window > MAX_WINDOW:
                raise ProtocolError("connection window overflow", FLOW_CONTROL_ERROR)
        elif stream_id == STREAM_ID:
            self._stream_window += increment
            if self._stream_window > MAX_WINDOW:
                raise ProtocolError("stream window overflow", FLOW_CONTROL_ERROR)
        self._flush()

    # Sending

    def _flush(self) -> None:
        """Frame and write as much of the outgoing buffer as the peer's windows admit."""
        outgoing = self._outgoing
        if not outgoing or self._transport is None or self.ended:
            return
        frames = []
        sent = 0
        while sent < len(outgoing):
            size = min(len(outgoing) - sent, self._max_frame, self._connection_window, self._stream_window)
            if size <= 0:
                break
            frames.append(frame(DATA, 0, STREAM_ID, bytes(outgoing[sent : sent + size])))
            sent += size
            self._connection_window -= size
            self._stream_window -= size
        del outgoing[:sent]
        if frames:
            self._transport.write(b"".join(frames))

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    # Ending

    def _check_alive(self) -> None:
        """Every KEEPALIVE seconds of silence a PING; silence KEEPALIVE_TIMEOUT seconds after it ends the call."""
        if self.ended:
            return
        now = time.monotonic()
        if self._ping_sent > self._heard:  # a PING is out and nothing came since
            if now - self._ping_sent >= KEEPALIVE_TIMEOUT:
                self._end(status(grpc.StatusCode.UNAVAILABLE, "The engine stopped answering (keepalive timed out)."))
                return
            due = self._ping_sent + KEEPALIVE_TIMEOUT
        elif now - self._heard >= KEEPALIVE:
            self._ping_sent = now
            self._write(frame(PING, 0, 0, bytes(8)))
            due = now + KEEPALIVE_TIMEOUT
        else:
            due = self._heard + KEEPALIVE
        self._keepalive = asyncio.get_running_loop().call_later(due - now, self._check_alive)

    def _fail(self, err: ProtocolError) -> None:
        self._write(frame(GOAWAY, 0, 0, _U32.pack(0) + _U32.pack(err.error_code)))
        self._end(status(grpc.StatusCode.INTERNAL, f"HTTP/2 protocol error from the engine: {err}."))

    def _end(self, result: status_pb2.Status) -> None:
        on_end, self._on_end = self._on_end, None
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self._transport is not None:
            self._transport.close()
        self._outgoing.clear()
        if on_end is not None:
            on_end(result)


def _unpadded(flags: int, payload: bytes) -> bytes:
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise ProtocolError("padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]


def _trailer_status(headers: dict[bytes, bytes]) -> status_pb2.Status:
    """The call's status from its trailers: grpc-status, grpc-message and grpc-status-details-bin."""
    raw = headers.get(b"grpc-status", b"")
    if not raw.isdigit():
        return status(grpc.StatusCode.UNKNOWN, "The engine sent no valid grpc-status.")
    details = headers.get(b"grpc-status-details-bin")
    if details:
        try:
            return status_pb2.Status.FromString(base64.b64decode(details + b"=" * (-len(details) % 4)))
        except ValueError:
            pass  # fall back to the plain status
    return status_pb2.Status(code=int(raw), message=unquote(headers.get(b"grpc-message", b"").decode("latin-1")))


def dial_target(target: str) -> tuple[str, str | tuple[str, int]] | None:
    """(authority, Unix path or (host, port)) for a gRPC target this module can dial: `unix:PATH`,
    `unix://ABSOLUTE_PATH`, `HOST:PORT` or `[IPV6]:PORT`; None for anything else (name resolvers, lists)."""
    if target.startswith("unix:"):
        path = target[5:]
        if path.startswith("//"):
            path = path[2:]
        return ("localhost", path) if path else None
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host or "/" in host:
        return None
    if host.startswith("["):
        if not host.endswith("]"):
            return None
        host = host[1:-1]
    elif ":" in host:
        return None
    return target, (host, int(port))


async def connect(stream: GrpcStream, address: str | tuple[str, int]) -> None:
    """Connect `stream` to `address` (a Unix path or (host, port)); a failure is delivered as its end."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            if isinstance(address, str):
                await loop.create_unix_connection(lambda: stream, address)
            else:
                await loop.create_connection(lambda: stream, *address)
    except (OSError, TimeoutError) as exc:
        stream.connection_failed(exc)
