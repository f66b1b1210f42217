"""Typed exceptions for failed engine calls, decoded from the rich gRPC status the engine sends."""

from collections.abc import Iterable, Sequence

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from chittycan.error_table import OpenAIError, openai_error
from chittycan.v1 import error_pb2, gateway_pb2

_STATUS_DETAILS_KEY = "grpc-status-details-bin"
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class GatewayCallError(Exception):
    """An engine call failed. `openai` says how an OpenAI client should see it; `rate_limits` are those of the
    upstream that refused the call, when it reported them."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str | None = None,
        param: str | None = None,
        detail: error_pb2.ErrorDetail | None = None,
        retry_after: float | None = None,
        rate_limits: gateway_pb2.RateLimits | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.param = param
        self.detail = detail
        self.retry_after = retry_after
        self.rate_limits = rate_limits

    @property
    def openai(self) -> OpenAIError:
        """HTTP status, OpenAI type and code; an upstream's own rendering (ErrorDetail) wins over the table."""
        table = openai_error(self.code, self.reason)
        if self.detail is None:
            return table
        code = self.detail.code if self.detail.HasField("code") else None
        return OpenAIError(self.detail.http_status or table.http_status, self.detail.type or table.type, code)

    @property
    def openai_param(self) -> str | None:
        """The offending request field, if any."""
        if self.detail is not None and self.detail.HasField("param"):
            return self.detail.param
        return self.param


class InvalidRequestError(GatewayCallError):
    """INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE."""


class AuthenticationError(GatewayCallError):
    """UNAUTHENTICATED."""


class PermissionDeniedError(GatewayCallError):
    """PERMISSION_DENIED."""


class NotFoundError(GatewayCallError):
    """NOT_FOUND."""


class RateLimitError(GatewayCallError):
    """RESOURCE_EXHAUSTED (rate limits and budgets)."""


class UnavailableError(GatewayCallError):
    """UNAVAILABLE: no upstream could serve."""


class DeadlineExceededError(GatewayCallError):
    """DEADLINE_EXCEEDED."""


class CallCancelledError(GatewayCallError):
    """CANCELLED."""


class InternalError(GatewayCallError):
    """INTERNAL, UNKNOWN, DATA_LOSS and anything else."""


_CLASSES: dict[grpc.StatusCode, type[GatewayCallError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidRequestError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequestError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimitError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CallCancelledError,
}


def error_from_rpc(
    code: grpc.StatusCode, message: str, trailing: Sequence[tuple[str, str | bytes]] | None
) -> GatewayCallError:
    """Decode the engine's status: ErrorInfo reason, BadRequest field, RetryInfo, ErrorDetail and RateLimits."""
    for key, value in trailing or ():
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            return _error(code, status.message or message, status.details)
    return _error(code, message, ())


def error_from_status(status: status_pb2.Status) -> GatewayCallError:
    """Typed exception for a call that ended with this (non-OK) google.rpc.Status."""
    return _error(_CODES.get(status.code, grpc.StatusCode.UNKNOWN), status.message, status.details)


def _error(code: grpc.StatusCode, message: str, details: Iterable[any_pb2.Any]) -> GatewayCallError:
    kwargs: dict[str, object] = {}
    for packed in details:
        kwargs.update(_decode_detail(packed))
    cls = _CLASSES.get(code, InternalError)
    return cls(code, message, **kwargs)  # type: ignore[arg-type]


def _decode_detail(packed: object) -> dict[str, object]:
    info = error_details_pb2.ErrorInfo()
    bad = error_details_pb2.BadRequest()
    retry = error_details_pb2.RetryInfo()
    detail = error_pb2.ErrorDetail()
    limits = gateway_pb2.RateLimits()
    if packed.Unpack(info):  # type: ignore[attr-defined]
        return {"reason": info.reason}
    if packed.Unpack(bad) and bad.field_violations:  # type: ignore[attr-defined]
        return {"param": bad.field_violations[0].field}
    if packed.Unpack(retry):  # type: ignore[attr-defined]
        return {"retry_after": retry.retry_delay.ToNanoseconds() / 1e9}
    if packed.Unpack(detail):  # type: ignore[attr-defined]
        return {"detail": detail}
    if packed.Unpack(limits):  # type: ignore[attr-defined]
        return {"rate_limits": limits}
    return {}


def error_from_aio(err: grpc.aio.AioRpcError) -> GatewayCallError:
    """Typed exception for a failed grpc.aio call."""
    return error_from_rpc(err.code(), err.details() or "", err.trailing_metadata())  # type: ignore[arg-type]
