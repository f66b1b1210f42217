"""The Provider protocol every upstream dialect implements, and the per-call upstream parameters."""

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from chittycan.v1 import completion_pb2, embedding_pb2, error_pb2, gateway_pb2
from engine import errors
from engine.errors import GatewayError
from engine.upstream_http import Timeouts, UpstreamHttpError


@dataclass(slots=True)
class UpstreamAnswer:
    """What the provider learned from a successful response besides the answer itself."""

    rate_limits: gateway_pb2.RateLimits | None = None


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """What one upstream call needs beyond the canonical request: the upstream model id, key and time limits.

    `first_byte_timeout` bounds the wait for response headers and, when streaming, for each next chunk.
    The provider fills `answer` when the upstream accepts the call.
    """

    model: str
    api_key: str | None
    connect_timeout: float
    first_byte_timeout: float
    total_timeout: float
    answer: UpstreamAnswer = field(default_factory=UpstreamAnswer)

    def timeouts(self, *, streaming: bool) -> Timeouts:
        """The HTTP timeouts: a stream has no total bound beyond the per-chunk one and the gRPC deadline."""
        return Timeouts(
            connect=self.connect_timeout,
            read=self.first_byte_timeout,
            total=None if streaming else self.total_timeout,
        )


class Provider(Protocol):
    """An upstream LLM API: chittycan.v1 on one side, its own dialect on the other."""

    name: str

    async def complete(
        self, request: completion_pb2.ChatRequest, call: UpstreamCall
    ) -> completion_pb2.ChatResponse: ...

    def stream_completion(
        self, request: completion_pb2.ChatRequest, call: UpstreamCall
    ) -> AsyncIterator[completion_pb2.ChatChunk]: ...

    async def embed(
        self, request: embedding_pb2.EmbeddingRequest, call: UpstreamCall
    ) -> embedding_pb2.EmbeddingResponse: ...


def upstream_error(
    status: int, message: str, detail: error_pb2.ErrorDetail, headers: Mapping[str, str]
) -> GatewayError:
    """Map an upstream HTTP failure to a GatewayError (the STYLE.md table); `detail` keeps its exact rendering."""
    retry_after = retry_after_seconds(headers)
    if status in (400, 422):
        return GatewayError(grpc.StatusCode.INVALID_ARGUMENT, errors.INVALID_REQUEST, message, detail=detail)
    if status in (401, 403):
        return GatewayError(grpc.StatusCode.INTERNAL, errors.UPSTREAM_AUTH, message, detail=detail)
    if status == 404:
        return GatewayError(grpc.StatusCode.NOT_FOUND, errors.MODEL_NOT_FOUND, message, detail=detail)
    if status == 429:
        return GatewayError(
            grpc.StatusCode.RESOURCE_EXHAUSTED, errors.RATE_LIMITED, message, detail=detail, retry_after=retry_after
        )
    if status >= 500:
        return GatewayError(
            grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_ERROR, message, detail=detail, retry_after=retry_after
        )
    return GatewayError(grpc.StatusCode.UNKNOWN, errors.UPSTREAM_ERROR, message, detail=detail)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """An upstream's retry-after-ms / retry-after (seconds; HTTP dates are not honoured) as seconds."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


def connection_error(provider: str, exc: BaseException) -> GatewayError:
    """The upstream could not be reached, broke the connection or sent what cannot be parsed."""
    reason = str(exc) if isinstance(exc, UpstreamHttpError) else type(exc).__name__
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_UNAVAILABLE, f"Could not reach the {provider} upstream ({reason})."
    )


# What translating JSON of the wrong shape raises.
MALFORMED = (AttributeError, TypeError, ValueError, KeyError)


def malformed_error(provider: str) -> GatewayError:
    """The upstream answered JSON that is not its API's shape (the translator raised one of MALFORMED)."""
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_ERROR, f"The {provider} upstream sent a malformed answer."
    )


def truncated_error(provider: str) -> GatewayError:
    """The upstream closed a stream before its end marker: what arrived is not a complete answer."""
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_UNAVAILABLE, f"The {provider} upstream ended the stream early."
    )


def timeout_error(provider: str) -> GatewayError:
    """The upstream did not answer in time."""
    return GatewayError(
        grpc.StatusCode.DEADLINE_EXCEEDED, errors.UPSTREAM_TIMEOUT, f"The {provider} upstream did not answer in time."
    )
