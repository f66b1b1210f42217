"""A CLIENT span per upstream call (each retry and fallback its own), with the GenAI semantic-convention attributes.

`traced` wraps a Provider without changing it. Prompt and completion text go on the span only when the engine's
Telemetry allows content (CHITTYCAN_TRACE_CONTENT=true), as proto JSON under `gen_ai.input.messages` and
`gen_ai.output.messages`.
"""

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import aclosing, contextmanager

import orjson
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from chittycan.v1 import completion_pb2, embedding_pb2
from engine.assemble import response_from_chunks
from engine.errors import GatewayError
from engine.providers.base import Provider, UpstreamCall
from engine.telemetry import Telemetry

_FINISH_PREFIX = "FINISH_REASON_"


def traced(provider: Provider, telemetry: Telemetry) -> Provider:
    """`provider` with a span around each call; the provider itself when tracing is off."""
    return _TracedProvider(provider, telemetry) if telemetry.enabled else provider


class _TracedProvider:
    """Delegates every call to the wrapped provider inside a span named `{operation} {upstream model}`."""

    def __init__(self, inner: Provider, telemetry: Telemetry) -> None:
        self.name = inner.name
        self._inner = inner
        self._tracer = telemetry.tracer
        self._content = telemetry.trace_content

    def _start(self, operation: str, call: UpstreamCall, request: completion_pb2.ChatRequest | None) -> Span:
        attributes: dict[str, str | int | float] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": call.model,
            "gen_ai.provider.name": self.name,
        }
        if request is not None:
            attributes.update(_request_attributes(request))
            if self._content:
                attributes["gen_ai.input.messages"] = _proto_json(request.messages)
        return self._tracer.start_span(f"{operation} {call.model}", kind=SpanKind.CLIENT, attributes=attributes)

    async def complete(self, request: completion_pb2.ChatRequest, call: UpstreamCall) -> completion_pb2.ChatResponse:
        """A non-streamed completion in a `chat` span."""
        span = self._start("chat", call, request)
        with trace.use_span(span, record_exception=False, set_status_on_exception=False), _ending(span):
            response = await self._inner.complete(request, call)
            _set_response(span, response.id, response.model, response.usage)
            span.set_attribute("gen_ai.response.finish_reasons", [_finish(c.finish_reason) for c in response.choices])
            if self._content:
                span.set_attribute("gen_ai.output.messages", _proto_json(c.message for c in response.choices))
            return response

    async def stream_completion(
        self, request: completion_pb2.ChatRequest, call: UpstreamCall
    ) -> AsyncIterator[completion_pb2.ChatChunk]:
        """A stream in a `chat` span that ends with the stream; the span is not made current across yields."""
        span = self._start("chat", call, request)
        collected: list[completion_pb2.ChatChunk] = []
        finishes: list[str] = []
        first = True
        with _ending(span):
            try:
                async with aclosing(self._inner.stream_completion(request, call)) as chunks:  # type: ignore[type-var]
                    async for chunk in chunks:
                        if first or chunk.HasField("usage"):
                            usage = chunk.usage if chunk.HasField("usage") else None
                            _set_response(span, chunk.id, chunk.model, usage)
                            first = False
                        finishes.extend(_finish(c.finish_reason) for c in chunk.choices if c.finish_reason)
                        if self._content:
                            collected.append(chunk)
                        yield chunk
            finally:
                span.set_attribute("gen_ai.response.finish_reasons", finishes)
                if self._content and collected:
                    output = response_from_chunks(collected).choices
                    span.set_attribute("gen_ai.output.messages", _proto_json(c.message for c in output))

    async def embed(
        self, request: embedding_pb2.EmbeddingRequest, call: UpstreamCall
    ) -> embedding_pb2.EmbeddingResponse:
        """Embeddings in an `embeddings` span (inputs are never recorded)."""
        span = self._start("embeddings", call, None)
        with trace.use_span(span, record_exception=False, set_status_on_exception=False), _ending(span):
            response = await self._inner.embed(request, call)
            span.set_attribute("gen_ai.response.model", response.model)
            span.set_attribute("gen_ai.usage.input_tokens", response.usage.prompt_tokens)
            return response


def _request_attributes(request: completion_pb2.ChatRequest) -> dict[str, str | int | float]:
    attributes: dict[str, str | int | float] = {}
    if request.HasField("temperature"):
        attributes["gen_ai.request.temperature"] = request.temperature
    if request.HasField("top_p"):
        attributes["gen_ai.request.top_p"] = request.top_p
    if request.HasField("max_completion_tokens") or request.HasField("max_tokens"):
        attributes["gen_ai.request.max_tokens"] = request.max_completion_tokens or request.max_tokens
    if request.HasField("seed"):
        attributes["gen_ai.request.seed"] = request.seed
    return attributes


def _set_response(span: Span, response_id: str, model: str, usage: completion_pb2.Usage | None) -> None:
    if response_id:
        span.set_attribute("gen_ai.response.id", response_id)
    if model:
        span.set_attribute("gen_ai.response.model", model)
    if usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)


@contextmanager
def _ending(span: Span) -> Iterator[None]:
    """End `span` with the block; a failure sets its status and `error.type` (the exception's text, which could
    quote the upstream's answer, is not recorded)."""
    try:
        yield
    except GatewayError as err:
        span.set_attribute("error.type", err.reason)
        span.set_status(Status(StatusCode.ERROR, err.code.name))
        raise
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except Exception as exc:
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(Status(StatusCode.ERROR))
        raise
    finally:
        span.end()


def _finish(reason: completion_pb2.FinishReason.ValueType) -> str:
    return completion_pb2.FinishReason.Name(reason).removeprefix(_FINISH_PREFIX).lower()


def _proto_json(messages: Iterable[completion_pb2.Message]) -> str:
    return orjson.dumps([json_format.MessageToDict(m) for m in messages]).decode()
