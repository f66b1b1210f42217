"""Synchronous client for the engine's GatewayService, for code without an event loop (scripts, WSGI apps)."""

from collections.abc import Iterator, Sequence

import grpc

from chittycan.v1 import completion_pb2, embedding_pb2, gateway_pb2, gateway_pb2_grpc
from clients.errors import error_from_rpc
from clients.gateway import CHANNEL_OPTIONS, call_metadata


def _raise(err: grpc.RpcError) -> None:
    call = err  # a failed sync call is also its grpc.Call
    raise error_from_rpc(call.code(), call.details() or "", call.trailing_metadata()) from None  # type: ignore[arg-type]


class SyncGatewayClient:
    """The same calls as clients.gateway.GatewayClient, blocking; errors are the same typed exceptions."""

    def __init__(self, target: str, *, options: Sequence[tuple[str, object]] = CHANNEL_OPTIONS) -> None:
        self._channel = grpc.insecure_channel(target, options=list(options))
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)

    def __enter__(self) -> "SyncGatewayClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def complete(
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
        try:
            response: gateway_pb2.CompleteResponse = self._stub.Complete(
                call, metadata=call_metadata(api_key, request_id), timeout=deadline
            )
        except grpc.RpcError as err:
            _raise(err)
        return response

    def stream_chat(
        self,
        request: completion_pb2.ChatRequest,
        *,
        api_key: str | None = None,
        request_id: str | None = None,
        options: gateway_pb2.CallOptions | None = None,
        deadline: float | None = None,
    ) -> Iterator[gateway_pb2.StreamChatResponse]:
        """Header, chunk and trailer events; closing the iterator early cancels the call."""
        call = gateway_pb2.StreamChatRequest(request=request, options=options)
        events = self._stub.StreamChat(call, metadata=call_metadata(api_key, request_id), timeout=deadline)
        try:
            yield from events
        except grpc.RpcError as err:
            _raise(err)
        finally:
            events.cancel()

    def embed(
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
        try:
            response: gateway_pb2.EmbedResponse = self._stub.Embed(
                call, metadata=call_metadata(api_key, request_id), timeout=deadline
            )
        except grpc.RpcError as err:
            _raise(err)
        return response

    def list_models(
        self, *, api_key: str | None = None, deadline: float | None = None
    ) -> gateway_pb2.ListModelsResponse:
        """Routable models."""
        try:
            response: gateway_pb2.ListModelsResponse = self._stub.ListModels(
                gateway_pb2.ListModelsRequest(), metadata=call_metadata(api_key, None), timeout=deadline
            )
        except grpc.RpcError as err:
            _raise(err)
        return response
