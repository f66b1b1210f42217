"""GatewayService calls multiplexed over one ExchangeService stream (see proto/chittycan/v1/exchange.proto).

The stream has a connection of its own, framed on the event loop by clients.h2_stream (grpc.aio would add two
thread wake-ups per message on this side), unless the target is one only grpc.aio can dial. The stream opens on
the first call and again after it breaks; calls that were running when it broke fail with the stream's error
(UNAVAILABLE when the engine went away). Each call's events are buffered for its reader, so a slow reader never
holds up the other calls. Each call is serialized once, as a one-call ExchangeRequest; calls queued together are
sent as the concatenation of those bytes, one ExchangeRequest holding them all.
"""

import asyncio
import itertools
from collections.abc import AsyncIterator

import grpc
from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from chittycan.exchange_batches import CREDIT_EVENTS, MESSAGE_LIMIT, take_batch
from chittycan.v1 import exchange_pb2, gateway_pb2
from clients import h2_stream
from clients.errors import (
    CallCancelledError,
    DeadlineExceededError,
    GatewayCallError,
    InternalError,
    InvalidRequestError,
    UnavailableError,
    error_from_aio,
    error_from_status,
)

_OK = grpc.StatusCode.OK.value[0]
_METHOD = "/chittycan.v1.ExchangeService/Exchange"
_End = GatewayCallError | None  # how a stream ends: an error, or None for OK


class _Unary:
    """A Complete or Embed call waiting for its one event."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[exchange_pb2.ExchangeEvent] = asyncio.get_running_loop().create_future()

    def deliver(self, event: exchange_pb2.ExchangeEvent) -> bool:
        if self.answer.done():
            return True
        if event.HasField("status"):
            code = event.status.code
            error = (
                error_from_status(event.status)
                if code != _OK
                else InternalError(grpc.StatusCode.INTERNAL, "The engine ended a unary call without an answer.")
            )
            self.answer.set_exception(error)
        else:
            self.answer.set_result(event)
        return True

    def fail(self, error: GatewayCallError) -> None:
        if not self.answer.done():
            self.answer.set_exception(error)


class ExchangeChatStream:
    """A running StreamChat call on the exchange: `read()` its events; `cancel()` ends it (and the upstream
    request) at once. Same interface as clients.gateway.ChatStream."""

    def __init__(self, link: "_Link", call_id: int, deadline: float | None) -> None:
        self._link = link
        self._call_id = call_id
        # At most STREAM_WINDOW_EVENTS plus the end: the engine waits for credit (`read` gives it).
        self._events: asyncio.Queue[gateway_pb2.StreamChatResponse | _End] = asyncio.Queue()
        self._taken = 0
        self._ended = False
        self._deadline = None if deadline is None else asyncio.get_running_loop().time() + deadline

    def deliver(self, event: exchange_pb2.ExchangeEvent) -> bool:
        if event.HasField("stream_chat"):
            self._events.put_nowait(event.stream_chat)
            return False
        if event.HasField("status") and event.status.code == _OK:
            self._events.put_nowait(None)
        elif event.HasField("status"):
            self._events.put_nowait(error_from_status(event.status))
        else:
            self._events.put_nowait(InternalError(grpc.StatusCode.INTERNAL, "The engine sent a unary answer."))
        return True

    def fail(self, error: GatewayCallError) -> None:
        self._events.put_nowait(error)

    def __aiter__(self) -> AsyncIterator[gateway_pb2.StreamChatResponse]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[gateway_pb2.StreamChatResponse]:
        while (event := await self.read()) is not None:
            yield event

    async def read(self) -> gateway_pb2.StreamChatResponse | None:
        """The next event, or None at the end of the stream; raises the call's error."""
        if self._ended:
            return None
        try:
            async with asyncio.timeout_at(self._deadline):
                event = await self._events.get()
        except TimeoutError:
            self.cancel()
            raise DeadlineExceededError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        if isinstance(event, gateway_pb2.StreamChatResponse):
            self._taken += 1
            if self._taken == CREDIT_EVENTS:
                self._link.credit(self._call_id, self._taken)
                self._taken = 0
            return event
        self._ended = True
        if event is not None:
            raise event
        return None

    def cancel(self) -> None:
        """Cancel the call (nothing happens when it has already ended)."""
        self._ended = True
        self._link.abandon(self._call_id)


_Handler = _Unary | ExchangeChatStream


class _Link:
    """One open Exchange stream: routes each event to its call; `pipe` carries the bytes."""

    def __init__(self) -> None:
        self._handlers: dict[int, _Handler] = {}
        self.broken = False
        self.pipe: _H2Pipe | _AioPipe

    def start(self, call: exchange_pb2.ExchangeCall, handler: _Handler) -> None:
        """Queue `call` (its call_id set) and route its events to `handler`; raises InvalidRequestError when the
        call is too large for a message."""
        data = exchange_pb2.ExchangeRequest(calls=[call]).SerializeToString()
        if len(data) > MESSAGE_LIMIT:
            raise InvalidRequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"The request is larger than the gateway's {MESSAGE_LIMIT >> 20} MiB message limit.",
            )
        self._handlers[call.call_id] = handler
        self.pipe.send(data)

    def abandon(self, call_id: int) -> None:
        """The caller gave up on a call: if it is still running, the engine cancels it."""
        if self._handlers.pop(call_id, None) is not None and not self.broken:
            self.pipe.send(exchange_pb2.ExchangeRequest(cancelled_call_ids=[call_id]).SerializeToString())

    def credit(self, call_id: int, events: int) -> None:
        """The reader of a running StreamChat call took `events` more events."""
        if call_id in self._handlers and not self.broken:
            credit = exchange_pb2.CallCredit(call_id=call_id, events=events)
            self.pipe.send(exchange_pb2.ExchangeRequest(credits=[credit]).SerializeToString())

    def received(self, response: exchange_pb2.ExchangeResponse) -> None:
        """Events from the engine."""
        for event in response.events:
            handler = self._handlers.get(event.call_id)
            if handler is not None and handler.deliver(event):
                del self._handlers[event.call_id]

    def ended(self, error: GatewayCallError) -> None:
        """The stream ended: calls still running fail with `error`."""
        self.broken = True
        handlers, self._handlers = self._handlers, {}
        for handler in handlers.values():
            handler.fail(error)


_SHUTDOWN = "The engine closed the connection (shutting down)."
_CLOSED = "The client closed the connection."


class _H2Pipe:
    """The stream on a connection of its own, framed on the event loop (clients.h2_stream). Requests queued in
    one loop turn go out as one message at the end of it."""

    def __init__(self, link: _Link, authority: str, address: str | tuple[str, int]) -> None:
        self._link = link
        self._outbox: list[bytes] = []
        self._stream = h2_stream.GrpcStream(_METHOD, authority, self._message, self._end, max_message=MESSAGE_LIMIT)
        self._connecting = asyncio.create_task(h2_stream.connect(self._stream, address))

    def send(self, message: bytes) -> None:
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(message)

    def _flush(self) -> None:
        while self._outbox:
            message, self._outbox = take_batch(self._outbox)
            self._stream.send(message)

    def _message(self, data: bytes) -> None:
        try:
            response = exchange_pb2.ExchangeResponse.FromString(data)
        except DecodeError:
            self._stream.fail(grpc.StatusCode.INTERNAL, "The engine sent a message that does not parse.")
            return
        self._link.received(response)

    def _end(self, status: status_pb2.Status) -> None:
        ok = status.code == _OK
        self._link.ended(UnavailableError(grpc.StatusCode.UNAVAILABLE, _SHUTDOWN) if ok else error_from_status(status))

    async def close(self) -> None:
        self._stream.cancel(_CLOSED)
        self._connecting.cancel()
        await asyncio.gather(self._connecting, return_exceptions=True)


class _AioPipe:
    """The stream as a grpc.aio call (for targets clients.h2_stream does not dial, or when asked): a writer
    sending what callers queued, as few messages as it can, and a reader."""

    def __init__(self, link: _Link, open_stream: "_OpenStream") -> None:
        self._link = link
        self._call = open_stream()
        self._outbox: list[bytes] = []
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._send())
        self._reader = asyncio.create_task(self._receive())

    def send(self, message: bytes) -> None:
        self._outbox.append(message)
        self._wake.set()

    async def close(self) -> None:
        self._writer.cancel()
        self._reader.cancel()
        await asyncio.gather(self._writer, self._reader, return_exceptions=True)
        self._call.cancel()

    async def _send(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                message, self._outbox = take_batch(self._outbox)
                try:
                    await self._call.write(message)
                except grpc.aio.AioRpcError:
                    return  # the reader sees the same failure and fails the calls
                except asyncio.InvalidStateError:
                    return  # the stream has already ended (reader side)

    async def _receive(self) -> None:
        error: GatewayCallError = UnavailableError(grpc.StatusCode.UNAVAILABLE, _SHUTDOWN)
        try:
            async for response in self._call:
                self._link.received(response)
        except grpc.aio.AioRpcError as err:
            error = error_from_aio(err)
        except asyncio.CancelledError:
            error = CallCancelledError(grpc.StatusCode.CANCELLED, _CLOSED)
            raise
        finally:
            self._writer.cancel()
            self._link.ended(error)


_OpenStream = grpc.aio.StreamStreamMultiCallable[bytes, exchange_pb2.ExchangeResponse]


class Exchange:
    """Calls over one Exchange stream to the engine at `target`, opened when first needed and reopened after a
    break. The stream gets a connection of its own, framed on the event loop, when `h2` is true and the target
    is one clients.h2_stream dials; otherwise it is a grpc.aio call on `channel`."""

    def __init__(self, channel: grpc.aio.Channel, target: str, *, h2: bool = True) -> None:
        # The generated stub would serialize again what _Link has already serialized.
        self._open_stream: _OpenStream = channel.stream_stream(
            _METHOD, request_serializer=None, response_deserializer=exchange_pb2.ExchangeResponse.FromString
        )
        self._dial = h2_stream.dial_target(target) if h2 else None
        self._link: _Link | None = None
        self._ids = itertools.count(1)

    @property
    def framed_here(self) -> bool:
        """True when the stream is framed on the event loop (clients.h2_stream), not by grpc.aio."""
        return self._dial is not None

    def _open(self) -> _Link:
        if self._link is None or self._link.broken:
            link = _Link()
            if self._dial is not None:
                link.pipe = _H2Pipe(link, *self._dial)
            else:
                link.pipe = _AioPipe(link, self._open_stream)
            self._link = link
        return self._link

    async def unary(self, call: exchange_pb2.ExchangeCall, deadline: float | None) -> exchange_pb2.ExchangeEvent:
        """Run a Complete or Embed call; its answer event, or its error raised."""
        link = self._open()
        call.call_id = next(self._ids)
        handler = _Unary()
        link.start(call, handler)
        try:
            async with asyncio.timeout(deadline):
                return await handler.answer
        except TimeoutError:
            raise DeadlineExceededError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        finally:
            link.abandon(call.call_id)

    def stream(self, call: exchange_pb2.ExchangeCall, deadline: float | None) -> ExchangeChatStream:
        """Start a StreamChat call."""
        link = self._open()
        call.call_id = next(self._ids)
        stream = ExchangeChatStream(link, call.call_id, deadline)
        try:
            link.start(call, stream)
        except GatewayCallError as err:
            stream.fail(err)  # raised by the first read, like any error of the call
        return stream

    async def close(self) -> None:
        """End the stream (running calls fail as cancelled)."""
        if self._link is not None:
            await self._link.pipe.close()
