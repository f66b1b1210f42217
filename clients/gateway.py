"""Async client for the engine's GatewayService; every failure is raised as a clients.errors exception.

Complete, StreamChat and Embed run over one multiplexed ExchangeService stream by default (much less gRPC work
per call), framed on the event loop (clients.h2_stream; `h2_exchange=False` leaves it to grpc.aio);
`multiplex=False` makes them standalone GatewayService RPCs.
"""

from asyncio import timeout as asyncio_timeout
from collections.abc import AsyncIterator, Sequence

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate

from chittycan.exchange_batches import MESSAGE_LIMIT
from chittycan.v1 import completion_pb2, embedding_pb2, exchange_pb2, gateway_pb2, gateway_pb2_grpc
from clients.errors import error_from_aio
from clients.exchange import Exchange, ExchangeChatStream

# Keepalive and message sizes must match what the engine accepts (engine/server.py).
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MESSAGE_LIMIT),
    ("grpc.max_send_message_length", MESSAGE_LIMIT),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def call_metadata(
    api_key: str | None, request_id: str | None, extra: Sequence[tuple[str, str]] = ()
) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying the caller's credential, request id and trace context (W3C `traceparent`)."""
    metadata: list[tuple[str, str]] = list(extra)
    if otel_context.get_current():  # an empty context has nothing to propagate (and injecting costs ~10 us)
        trace_context: dict[str, str] = {}
        propagate.inject(trace_context)
        metadata.extend(trace_context.items())
    if api_key:
        metadata.append(("authorization", f"Bearer {api_key}"))
    if request_id:
        metadata.append(("x-request-id", request_id))
    return tuple(metadata)


def call_headers(api_key: str | None, request_id: str | None, deadline: float | None) -> exchange_pb2.CallHeaders:
    """What `call_metadata` and the deadline carry, for a call on the exchange stream."""
    headers = exchange_pb2.CallHeaders(request_id=request_id or "")
    if otel_context.get_current():
        propagate.inject(headers.trace_context)
    if api_key:
        headers.authorization = f"Bearer {api_key}"
    if deadline is not None:
        headers.timeout.FromNanoseconds(int(deadline * 1e9))
    return headers


class ChatStream:
    """A running StreamChat call: iterate its events; `cancel()` ends it (and the upstream request) at once."""

    def __init__(self, call: grpc.aio.UnaryStreamCall) -> None:  # type: ignore[type-arg]
        self._call = call

    def __aiter__(self) -> AsyncIterator[gateway_pb2.StreamChatResponse]:
        return self._events()

    async def _events(self) -> AsyncIterator[gateway_pb2.StreamChatResponse]:
        try:
            async for event in self._call:
                yield event
        except grpc.aio.AioRpcError as err:
            raise error_from_aio(err) from None

    async def read(self) -> gateway_pb2.StreamChatResponse | None:
        """The next event, or None at the end of the stream."""
        try:
            event = await self._call.read()
        except grpc.aio.AioRpcError as err:
            raise error_from_aio(err) from None
        if event is grpc.aio.EOF:
            return None
        assert isinstance(event, gateway_pb2.StreamChatResponse)
        return event

    def cancel(self) -> None:
        """Cancel the call."""
        self._call.cancel()


class GatewayClient:
    """One channel to the engine, shared by every call; pass `deadline` (seconds from now) to bound a call."""

    def __init__(
        self,
        target: str,
        *,
        options: Sequence[tuple[str, object]] = CHANNEL_OPTIONS,
        multiplex: bool = True,
        h2_exchange: bool = True,
    ) -> None:
        self._channel = grpc.aio.insecure_channel(target, options=list(options))
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self._exchange = Exchange(self._channel, target, h2=h2_exchange) if multiplex else None

    @property
    def framed_here(self) -> bool:
        """True when calls run on the exchange stream framed on the event loop (clients.h2_stream)."""
        return self._exchange is not None and self._exchange.framed_here

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying channel (for other services on the same engine, e.g. health)."""
        return self._channel

    async def __aenter__(self) -> "GatewayClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        if self._exchange is not None:
            await self._exchange.close()
        await self._channel.close()

    async def wait_ready(self, seconds: float) -> None:
        """Wait until the channel is connected; raises TimeoutError."""
        async with asyncio_timeout(seconds):
            await self._channel.channel_ready()

    async def complete(
        self,
        request: completion_pb2.ChatRequest,
        *,
        api_key: str | None = None,
        request_id: str | None = None,
        options: gateway_pb2.CallOptions | None = None,
        deadline: float | None = None,
    ) -> gateway_pb2.CompleteResponse:
        """A non-streamed chat completion."""
        call = gateway_pb2.CompleteRequest(request=request, options=options)
        if self._exchange is not None:
            headers = call_headers(api_key, request_id, deadline)
            event = await self._exchange.unary(exchange_pb2.ExchangeCall(headers=headers, complete=call), deadline)
            return event.complete
        try:
            return await self._stub.Complete(call, metadata=call_metadata(api_key, request_id), timeout=deadline)
        except grpc.aio.AioRpcError as err:
            raise error_from_aio(err) from None

    def stream_chat(
        self,
        request: completion_pb2.ChatRequest,
        *,
        api_key: str | None = None,
        request_id: str | None = None,
        options: gateway_pb2.CallOptions | None = None,
        deadline: float | None = None,
    ) -> ChatStream | ExchangeChatStream:
        """A streamed chat completion: header event, chunk events, trailer event."""
        call = gateway_pb2.StreamChatRequest(request=request, options=options)
        if self._exchange is not None:
            headers = call_headers(api_key, request_id, deadline)
            return self._exchange.stream(exchange_pb2.ExchangeCall(headers=headers, stream_chat=call), deadline)
        return ChatStream(self._stub.StreamChat(call, metadata=call_metadata(api_key, request_id), timeout=deadline))

    async def embed(
        self,
        request: embedding_pb2.EmbeddingRequest,
        *,
        api_key: str | None = None,
        request_id: str | None = None,
        options: gateway_pb2.CallOptions | None = None,
        deadline: float | None = None,
    ) -> gateway_pb2.EmbedResponse:
        """Embeddings."""
        call = gateway_pb2.EmbedRequest(request=request, options=options)
        if self._exchange is not None:
            headers = call_headers(api_key, request_id, deadline)
            event = await self._exchange.unary(exchange_pb2.ExchangeCall(headers=headers, embed=call), deadline)
            return event.embed
        try:
            return await self._stub.Embed(call, metadata=call_metadata(api_key, request_id), timeout=deadline)
        except grpc.aio.AioRpcError as err:
            raise error_from_aio(err) from None

    async def list_models(
        self, *, api_key: str | None = None, request_id: str | None = None, deadline: float | None = None
    ) -> gateway_pb2.ListModelsResponse:
        """Routable models."""
        try:
            return await self._stub.ListModels(
                gateway_pb2.ListModelsRequest(), metadata=call_metadata(api_key, request_id), timeout=deadline
            )
        except grpc.aio.AioRpcError as err:
            raise error_from_aio(err) from None

    async def get_model(
        self, model_id: str, *, api_key: str | None = None, request_id: str | None = None, deadline: float | None = None
    ) -> gateway_pb2.GetModelResponse:
        """One routable model."""
        try:
            return await self._stub.GetModel(
                gateway_pb2.GetModelRequest(id=model_id), metadata=call_metadata(api_key, request_id), timeout=deadline
            )
        except grpc.aio.AioRpcError as err:
            raise error_from_aio(err) from None
