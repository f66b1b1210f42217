"""The one error table (STYLE.md): gRPC code and reason -> HTTP status, OpenAI error `type` and `code`.

The engine uses it to record the status a client got; the facade uses it to render errors.
"""

from typing import NamedTuple

import grpc


class OpenAIError(NamedTuple):
    """How a gateway error is rendered to an OpenAI client."""

    http_status: int
    type: str
    code: str | None


_BY_REASON: dict[str, OpenAIError] = {
    "BUDGET_EXCEEDED": OpenAIError(429, "insufficient_quota", "insufficient_quota"),
    "RATE_LIMITED": OpenAIError(429, "requests", "rate_limit_exceeded"),
    "MISSING_API_KEY": OpenAIError(401, "invalid_request_error", None),
    "OVERLOADED": OpenAIError(503, "server_error", "overloaded"),
}

_BY_CODE: dict[grpc.StatusCode, OpenAIError] = {
    grpc.StatusCode.INVALID_ARGUMENT: OpenAIError(400, "invalid_request_error", None),
    grpc.StatusCode.FAILED_PRECONDITION: OpenAIError(400, "invalid_request_error", None),
    grpc.StatusCode.OUT_OF_RANGE: OpenAIError(400, "invalid_request_error", None),
    grpc.StatusCode.UNAUTHENTICATED: OpenAIError(401, "invalid_request_error", "invalid_api_key"),
    grpc.StatusCode.PERMISSION_DENIED: OpenAIError(403, "invalid_request_error", "permission_denied"),
    grpc.StatusCode.NOT_FOUND: OpenAIError(404, "invalid_request_error", "model_not_found"),
    grpc.StatusCode.ABORTED: OpenAIError(409, "invalid_request_error", "conflict"),
    grpc.StatusCode.ALREADY_EXISTS: OpenAIError(409, "invalid_request_error", "conflict"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: OpenAIError(429, "requests", "rate_limit_exceeded"),
    grpc.StatusCode.CANCELLED: OpenAIError(499, "invalid_request_error", None),
    grpc.StatusCode.DEADLINE_EXCEEDED: OpenAIError(504, "server_error", "timeout"),
    grpc.StatusCode.UNAVAILABLE: OpenAIError(503, "server_error", "upstream_unavailable"),
    grpc.StatusCode.UNIMPLEMENTED: OpenAIError(501, "invalid_request_error", "unsupported"),
}

_INTERNAL = OpenAIError(500, "server_error", None)


def openai_error(code: grpc.StatusCode, reason: str | None) -> OpenAIError:
    """The rendering of an error with this gRPC code and ErrorInfo reason."""
    if reason is not None and (by_reason := _BY_REASON.get(reason)) is not None:
        return by_reason
    return _BY_CODE.get(code, _INTERNAL)
