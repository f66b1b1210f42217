"""Anthropic's Messages API: the I/O half; the pure translators live in anthropic_translate."""

import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc
import orjson

from chittycan.v1 import completion_pb2, embedding_pb2
from engine import errors
from engine.errors import GatewayError
from engine.providers.anthropic_translate import (
    StreamTranslator,
    error_from_response,
    messages_body_from_proto,
    response_from_anthropic,
)
from engine.providers.base import (
    MALFORMED,
    UpstreamCall,
    connection_error,
    malformed_error,
    timeout_error,
    truncated_error,
)
from engine.providers.rate_limits import from_anthropic as rate_limits_from_anthropic
from engine.providers.sse import iter_sse_events
from engine.upstream_http import UpstreamHttp, UpstreamHttpError

ANTHROPIC_VERSION = "2023-06-01"
"""The `anthropic-version` header every request carries (https://docs.anthropic.com/en/api/versioning)."""


class AnthropicProvider:
    """Anthropic's /v1/messages, unary and streamed; Anthropic has no embeddings API."""

    def __init__(self, name: str, base_url: str, http: UpstreamHttp, *, clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self._http = http
        # The base URL is taken without /v1, as the Anthropic SDK takes it; one that ends in /v1 is accepted too.
        base = base_url.rstrip("/")
        self._url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
        self._clock = clock

    def _headers(self, call: UpstreamCall) -> dict[str, str]:
        headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if call.api_key:
            headers["x-api-key"] = call.api_key
        return headers

    def _refused(self, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
        """The upstream's error, with the rate limits it reported alongside."""
        err = error_from_response(status, body, headers)
        err.rate_limits = rate_limits_from_anthropic(headers, self._clock())
        return err

    async def complete(self, request: completion_pb2.ChatRequest, call: UpstreamCall) -> completion_pb2.ChatResponse:
        """One non-streamed completion."""
        data = orjson.dumps(messages_body_from_proto(request, call.model, stream=False))
        try:
            async with self._http.post(self._url, data, self._headers(call), call.timeouts(streaming=False)) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise self._refused(resp.status, raw, resp.headers)
                call.answer.rate_limits = rate_limits_from_anthropic(resp.headers, self._clock())
        except TimeoutError:
            raise timeout_error(self.name) from None
        except UpstreamHttpError as exc:
            raise connection_error(self.name, exc) from None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_ERROR, f"The {self.name} upstream sent invalid JSON."
            )
        try:
            return response_from_anthropic(body, int(self._clock()))
        except MALFORMED:
            raise malformed_error(self.name) from None

    async def stream_completion(
        self, request: completion_pb2.ChatRequest, call: UpstreamCall
    ) -> AsyncIterator[completion_pb2.ChatChunk]:
        """Chunks as the upstream's events arrive; a stream that ends without message_stop raises UNAVAILABLE."""
        data = orjson.dumps(messages_body_from_proto(request, call.model, stream=True))
        translator = StreamTranslator(int(self._clock()))
        try:
            async with self._http.post(self._url, data, self._headers(call), call.timeouts(streaming=True)) as resp:
                if resp.status != 200:
                    raise self._refused(resp.status, await resp.read(), resp.headers)
                call.answer.rate_limits = rate_limits_from_anthropic(resp.headers, self._clock())
                async for event in iter_sse_events(resp.lines()):
                    chunk = translator.chunk_from_event(event.event, _event_data(event.data))
                    if chunk is not None:
                        yield chunk
                    if translator.stopped:
                        return
        except TimeoutError:
            raise timeout_error(self.name) from None
        except (UpstreamHttpError, orjson.JSONDecodeError) as exc:
            raise connection_error(self.name, exc) from None
        except MALFORMED:
            raise malformed_error(self.name) from None
        raise truncated_error(self.name)

    async def embed(
        self, request: embedding_pb2.EmbeddingRequest, call: UpstreamCall
    ) -> embedding_pb2.EmbeddingResponse:
        """Always raises UNIMPLEMENTED."""
        raise GatewayError(
            grpc.StatusCode.UNIMPLEMENTED,
            errors.UNSUPPORTED,
            "Anthropic has no embeddings API; route embedding models elsewhere.",
        )


def _event_data(raw: bytes) -> dict[str, Any]:
    """An event's JSON payload; raises orjson.JSONDecodeError when the upstream sent garbage."""
    data = orjson.loads(raw)
    return data if isinstance(data, dict) else {}
