"""Tracing: OpenTelemetry set up from the standard OTEL_* variables, the engine's server span per gateway call
(W3C trace context from gRPC metadata), and GenAI semantic-convention attributes from usage records.

Prompt and completion text are never recorded unless CHITTYCAN_TRACE_CONTENT=true.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import aclosing, contextmanager
from typing import Any, TypeVar

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from chittycan.otel import shutdown_tracer_provider, tracer_provider_from_env
from chittycan.v1 import usage_pb2

TRACE_CONTENT_ENV = "CHITTYCAN_TRACE_CONTENT"
ENGINE_SERVICE_NAME = "chittycan-engine"
_TRACED_METHODS = "/chittycan.v1.GatewayService/"
# Codes that mark a server span as failed (OpenTelemetry's gRPC conventions); the others are the caller's doing.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_TRUE = frozenset({"1", "true", "yes", "on"})

OPERATION_NAMES: Mapping[int, str] = {
    usage_pb2.OPERATION_CHAT: "chat",
    usage_pb2.OPERATION_STREAM_CHAT: "chat",
    usage_pb2.OPERATION_EMBED: "embeddings",
}
CACHE_NAMES: Mapping[int, str] = {
    usage_pb2.CACHE_STATUS_UNSPECIFIED: "none",
    usage_pb2.CACHE_STATUS_HIT: "hit",
    usage_pb2.CACHE_STATUS_MISS: "miss",
    usage_pb2.CACHE_STATUS_BYPASS: "bypass",
}

Behavior = Callable[..., Any]
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


def trace_content_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Whether CHITTYCAN_TRACE_CONTENT allows recording prompt and completion text."""
    env = os.environ if environ is None else environ
    return env.get(TRACE_CONTENT_ENV, "").strip().lower() in _TRUE


class Telemetry:
    """The engine's tracer and whether spans may carry content."""

    def __init__(self, provider: trace.TracerProvider, *, trace_content: bool = False) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("chittycan.engine")
        self.trace_content = trace_content

    @classmethod
    def from_env(cls) -> Telemetry:
        """Tracing as the OTEL_* and CHITTYCAN_TRACE_CONTENT variables say."""
        return cls(tracer_provider_from_env(ENGINE_SERVICE_NAME), trace_content=trace_content_from_env())

    @property
    def enabled(self) -> bool:
        """Whether spans are recorded at all."""
        return not isinstance(self.provider, trace.NoOpTracerProvider)

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        """The server interceptor that opens a span per GatewayService call (install it only when enabled)."""
        return _CallInterceptor(self)

    @contextmanager
    def server_span(self, method: str, carrier: Mapping[str, str]) -> Iterator[trace.Span]:
        """The engine's SERVER span for one GatewayService call (`/package.Service/Method`), continuing the
        caller's trace from `carrier` (W3C trace context); record how it ended with `set_rpc_code`."""
        service, _, rpc = method.removeprefix("/").partition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}
        with self.tracer.start_as_current_span(
            method.removeprefix("/"),
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    async def shutdown(self) -> None:
        """Flush and stop the tracer provider."""
        await shutdown_tracer_provider(self.provider)


def set_rpc_code(span: trace.Span, code: grpc.StatusCode) -> None:
    """Record a call's gRPC status code on its server span; server-side failures mark the span as an error."""
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, code.name))


def usage_attributes(record: usage_pb2.UsageRecord) -> dict[str, str | int | float]:
    """GenAI semantic-convention attributes, cache status and cost of a finished request."""
    attributes: dict[str, str | int | float] = {
        "gen_ai.operation.name": OPERATION_NAMES.get(record.operation, "chat"),
        "gen_ai.request.model": record.requested_model,
        "gen_ai.usage.input_tokens": record.prompt_tokens,
        "gen_ai.usage.output_tokens": record.completion_tokens,
        "chittycan.cache": CACHE_NAMES.get(record.cache, "none"),
        "chittycan.request_id": record.request_id,
        "chittycan.http_status": record.http_status,
    }
    if record.routed_model:
        attributes["gen_ai.response.model"] = record.routed_model
    if record.provider:
        attributes["gen_ai.provider.name"] = record.provider
    if record.tenant:
        attributes["chittycan.tenant"] = record.tenant
    if record.cost_known:
        attributes["chittycan.cost_usd"] = record.cost_micros / 1e6
    if record.saved_micros:
        attributes["chittycan.saved_usd"] = record.saved_micros / 1e6
    if record.error_reason:
        attributes["error.type"] = record.error_reason
    return attributes


def annotate_span(record: usage_pb2.UsageRecord) -> None:
    """Put a finished request's figures on the current span (the engine's server span for the call)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(usage_attributes(record))


class _CallInterceptor(grpc.aio.ServerInterceptor):
    """Wraps GatewayService handlers: a SERVER span continuing the caller's trace, and the in-flight count."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Request, _Response] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Request, _Response] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(_TRACED_METHODS):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _unary(self, method: str, behavior: Behavior) -> Behavior:
        async def traced(request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[type-arg]
            with self._span(method, context):
                return await behavior(request, context)

        return traced

    def _stream(self, method: str, behavior: Behavior) -> Behavior:
        async def traced(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:  # type: ignore[type-arg]
            with self._span(method, context):
                async with aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        yield response

        return traced

    @contextmanager
    def _span(self, method: str, context: grpc.aio.ServicerContext) -> Iterator[None]:  # type: ignore[type-arg]
        carrier = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        with self._telemetry.server_span(method, carrier) as span:
            code = grpc.StatusCode.OK
            try:
                yield
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                set_rpc_code(span, context.code() or code)
