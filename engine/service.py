"""The GatewayService servicer: adapts gRPC calls to Gateway methods; the only code that sets a gRPC status."""

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NoReturn, TypeVar

import grpc

from chittycan.v1 import gateway_pb2, gateway_pb2_grpc
from engine import errors
from engine.errors import GatewayError
from engine.gateway import CallContext, Gateway

log = logging.getLogger(__name__)
T = TypeVar("T")


def call_context(context: grpc.aio.ServicerContext) -> CallContext:  # type: ignore[type-arg]
    """Request id, credential and deadline from the call's metadata."""
    metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
    remaining = context.time_remaining()
    return CallContext(
        request_id=metadata.get("x-request-id") or f"req_{uuid.uuid4().hex}",
        authorization=metadata.get("authorization"),
        deadline=None if remaining is None else time.monotonic() + remaining,
    )


async def abort(context: grpc.aio.ServicerContext, err: GatewayError) -> NoReturn:  # type: ignore[type-arg]
    """End the call with `err` as a rich status."""
    status = err.to_status()
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("abort returned")  # pragma: no cover


def internal_error(request_id: str) -> GatewayError:
    """What a client sees for a bug: a generic message naming the request id; the traceback goes to the log."""
    log.exception("unexpected error in request %s", request_id)
    return GatewayError(
        grpc.StatusCode.INTERNAL,
        errors.INTERNAL,
        f"The gateway had an internal error. Quote request id {request_id} when reporting it.",
    )


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    """chittycan.v1.GatewayService over a Gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def _unary(
        self,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
        call: Callable[[CallContext], Awaitable[T]],
    ) -> T:
        ctx = call_context(context)
        try:
            return await call(ctx)
        except GatewayError as err:
            await abort(context, err)
        except Exception:  # noqa: BLE001 - a bug must still end as a clean INTERNAL status
            await abort(context, internal_error(ctx.request_id))

    async def Complete(
        self,
        request: gateway_pb2.CompleteRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> gateway_pb2.CompleteResponse:
        return await self._unary(context, lambda ctx: self._gateway.complete(ctx, request))

    async def StreamChat(
        self,
        request: gateway_pb2.StreamChatRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> AsyncIterator[gateway_pb2.StreamChatResponse]:
        ctx = call_context(context)
        try:
            async for event in self._gateway.stream_chat(ctx, request):
                yield event
        except GatewayError as err:
            await abort(context, err)
        except Exception:  # noqa: BLE001 - a bug must still end as a clean INTERNAL status
            await abort(context, internal_error(ctx.request_id))

    async def Embed(
        self,
        request: gateway_pb2.EmbedRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> gateway_pb2.EmbedResponse:
        return await self._unary(context, lambda ctx: self._gateway.embed(ctx, request))

    async def ListModels(
        self,
        request: gateway_pb2.ListModelsRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> gateway_pb2.ListModelsResponse:
        return await self._unary(context, self._gateway.list_models)

    async def GetModel(
        self,
        request: gateway_pb2.GetModelRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> gateway_pb2.GetModelResponse:
        return await self._unary(context, lambda ctx: self._gateway.get_model(ctx, request.id))
