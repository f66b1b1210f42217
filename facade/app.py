"""The aiohttp application factory: routes, OpenAI-format errors for everything, and the engine channel."""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace

from clients.gateway import GatewayClient
from facade import calls, headers, observability
from facade.chat import create_chat_completion
from facade.embeddings import create_embeddings
from facade.errors import error_body
from facade.models import list_models, retrieve_model
from facade.state import ENGINE

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 << 20


class _RedactUnparsedRequests(logging.Filter):
    """aiohttp logs a request it cannot parse with its parser's message, which quotes the offending bytes: an
    Authorization header among them. Keep that it happened and why in one line, not the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "refused a request from %s that is not valid HTTP (%s)"
            record.args = (remote, type(exc).__name__)
            record.exc_info = record.exc_text = None
        return True


_REDACT = _RedactUnparsedRequests()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Whatever goes wrong, the client gets an OpenAI error body with the right status, never a traceback; every
    response carries an x-request-id."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message, code = exc.reason, None
        if exc.status == 401:
            message, code = "Incorrect API key provided.", "invalid_api_key"
        elif exc.status == 404:
            message = f"Invalid URL ({request.method} {request.path})"
        elif exc.status == 413:
            message = f"Request body too large: the limit is {MAX_BODY_BYTES} bytes."
        allow = exc.headers.get("Allow")
        return _error(exc.status, message, "invalid_request_error", calls.request_id(request), code, allow=allow)
    except (ConnectionResetError, OSError):
        raise
    except Exception:
        request_id = calls.request_id(request)
        log.exception("unexpected error in facade request %s", request_id)
        message = f"The gateway had an internal error (request id {request_id})."
        return _error(500, message, "server_error", request_id)
    if not response.prepared and headers.REQUEST_ID not in response.headers:
        response.headers[headers.REQUEST_ID] = calls.request_id(request)
    return response


def _error(
    status: int, message: str, type_: str, request_id: str, code: str | None = None, *, allow: str | None = None
) -> web.Response:
    """An OpenAI error body; `allow` is a 405's Allow header (RFC 9110 requires it)."""
    response = web.Response(
        status=status,
        body=error_body(message, type_, None, code),
        content_type="application/json",
        headers={headers.REQUEST_ID: request_id},
    )
    if allow is not None:
        response.headers["Allow"] = allow
    return response


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the facade process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the engine answers its gRPC health check (the engine checks its own store)."""
    client = request.app[ENGINE]
    try:
        stub = health_pb2_grpc.HealthStub(client.channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return web.json_response({"status": "unavailable", "engine": type(exc).__name__}, status=503)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return web.json_response({"status": "unavailable", "engine": "not serving"}, status=503)
    return web.json_response({"status": "ok"})


def create_app(
    engine_addr: str, *, tracer_provider: trace.TracerProvider | None = None, h2_exchange: bool = True
) -> web.Application:
    """The facade app, talking to the engine at `engine_addr` (see clients.gateway.GatewayClient for
    `h2_exchange`); traced as the OTEL_* variables say unless `tracer_provider` is given."""
    middlewares = [observability.trace_requests, openai_errors]
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    logging.getLogger("aiohttp.server").addFilter(_REDACT)  # added once: the same filter object
    observability.setup_tracing(app, tracer_provider)

    async def engine_channel(app: web.Application) -> AsyncIterator[None]:
        client = GatewayClient(engine_addr, h2_exchange=h2_exchange)
        app[ENGINE] = client
        yield
        await client.close()

    app.cleanup_ctx.append(engine_channel)
    app.router.add_post("/v1/chat/completions", create_chat_completion)
    app.router.add_post("/v1/embeddings", create_embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", observability.metrics)
    return app
