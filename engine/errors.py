"""GatewayError, the one exception engine code raises, its reasons, and its rendering as a rich gRPC status."""

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from chittycan.error_table import openai_error
from chittycan.v1 import error_pb2, gateway_pb2

ERROR_DOMAIN = "chittycan"

INVALID_REQUEST = "INVALID_REQUEST"
MISSING_API_KEY = "MISSING_API_KEY"
INVALID_API_KEY = "INVALID_API_KEY"
PERMISSION_DENIED = "PERMISSION_DENIED"
MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
RATE_LIMITED = "RATE_LIMITED"
BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
OVERLOADED = "OVERLOADED"
UPSTREAM_AUTH = "UPSTREAM_AUTH"
UPSTREAM_ERROR = "UPSTREAM_ERROR"
UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
UPSTREAM_TIMEOUT = "UPSTREAM_TIMEOUT"
UNSUPPORTED = "UNSUPPORTED"
NOT_FOUND = "NOT_FOUND"
CONFLICT = "CONFLICT"
INTERNAL = "INTERNAL"
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"


class GatewayError(Exception):
    """A failure with its gRPC code, reason and a human message that never holds secrets or prompt text.

    `detail` pins the exact OpenAI rendering (an upstream's own status, type and code); `param` names the
    offending request field; `retry_after` (seconds) becomes RetryInfo and the client's Retry-After header;
    `rate_limits` are the refusing upstream's, passed on to the client.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        *,
        param: str | None = None,
        detail: error_pb2.ErrorDetail | None = None,
        retry_after: float | None = None,
        rate_limits: gateway_pb2.RateLimits | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.param = param
        self.detail = detail
        self.retry_after = retry_after
        self.rate_limits = rate_limits

    @property
    def http_status(self) -> int:
        """The HTTP status the client gets for this error."""
        if self.detail is not None and self.detail.http_status:
            return self.detail.http_status
        return openai_error(self.code, self.reason).http_status

    def __repr__(self) -> str:
        return f"GatewayError({self.code.name}, {self.reason}, {self.message!r})"

    def to_status(self) -> grpc.Status:
        """Render as a rich gRPC status (what `rpc_status` says, in the call's trailing metadata)."""
        result: grpc.Status = rpc_status.to_status(self.rpc_status())
        return result

    def rpc_status(self) -> status_pb2.Status:
        """A google.rpc.Status with ErrorInfo and, where useful, BadRequest, RetryInfo, ErrorDetail, RateLimits."""
        details = [_pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN))]
        if self.param is not None:
            violation = error_details_pb2.BadRequest.FieldViolation(field=self.param, description=self.message)
            details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
        if self.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_after * 1e9))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        if self.detail is not None:
            details.append(_pack(self.detail))
        if self.rate_limits is not None:
            details.append(_pack(self.rate_limits))
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=details)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def invalid_request(message: str, param: str | None = None) -> GatewayError:
    """A 400 for a bad request field."""
    return GatewayError(grpc.StatusCode.INVALID_ARGUMENT, INVALID_REQUEST, message, param=param)
