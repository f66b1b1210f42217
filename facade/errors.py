"""OpenAI-format error responses: the facade's own request errors and engine call errors, one table for both."""

import grpc
import orjson
from aiohttp import web

from chittycan.error_table import openai_error
from clients.errors import GatewayCallError
from facade import headers


class RequestError(Exception):
    """A request the facade refuses before calling the engine (bad JSON, bad field)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status


def error_body(message: str, type_: str, param: str | None, code: str | None) -> bytes:
    """OpenAI's error body: {"error": {message, type, param, code}}."""
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def request_error_response(err: RequestError, request_id: str) -> web.Response:
    """Render a facade-side error through the table."""
    rendering = openai_error(err.status, None)
    return _response(rendering.http_status, error_body(err.message, rendering.type, err.param, err.code), request_id)


def call_error_body(err: GatewayCallError) -> bytes:
    """The body of an engine error."""
    rendering = err.openai
    return error_body(err.message, rendering.type, err.openai_param, rendering.code)


def call_error_response(err: GatewayCallError, request_id: str) -> web.Response:
    """Render an engine error: status and body from its ErrorDetail or the table, plus retry headers."""
    response = _response(err.openai.http_status, call_error_body(err), request_id)
    if err.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(err.retry_after)))
    if err.reason == "BUDGET_EXCEEDED":
        response.headers["x-should-retry"] = "false"
    if err.rate_limits is not None:
        response.headers.update(headers.rate_limit_headers(err.rate_limits))
    return response


def _response(status: int, body: bytes, request_id: str) -> web.Response:
    return web.Response(
        status=status,
        body=body,
        content_type="application/json",
        headers={headers.REQUEST_ID: request_id},
    )
