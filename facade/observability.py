"""GET /metrics (the engine's Prometheus exposition) and the facade's tracing: a SERVER span per API request that
continues the client's W3C `traceparent`; the engine client passes the span on in the gRPC metadata."""

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from chittycan.otel import shutdown_tracer_provider, tracer_provider_from_env
from clients.errors import GatewayCallError
from clients.usage import UsageClient
from facade import calls, headers
from facade.errors import call_error_response
from facade.state import ENGINE

FACADE_SERVICE_NAME = "chittycan-facade"
TRACER = web.AppKey("tracer", trace.Tracer)
_TRACED_PREFIX = "/v1/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup_tracing(app: web.Application, provider: trace.TracerProvider | None) -> None:
    """Trace with `provider`, or with one built from the OTEL_* variables at startup and shut down at cleanup."""
    if provider is not None:
        app[TRACER] = provider.get_tracer("chittycan.facade")
        return

    async def tracing(app: web.Application) -> AsyncIterator[None]:
        owned = tracer_provider_from_env(FACADE_SERVICE_NAME)
        if not isinstance(owned, trace.NoOpTracerProvider):  # no backend: no span work on the request path
            app[TRACER] = owned.get_tracer("chittycan.facade")
        yield
        await shutdown_tracer_provider(owned)

    app.cleanup_ctx.append(tracing)


@web.middleware
async def trace_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A span around each /v1/ request (health checks and scrapes are not traced), child of the client's trace."""
    tracer = request.app.get(TRACER)
    if tracer is None or not request.path.startswith(_TRACED_PREFIX):
        return await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else request.path
    attributes = {"http.request.method": request.method, "url.path": request.path, "http.route": route}
    with tracer.start_as_current_span(
        f"{request.method} {route}", context=propagate.extract(request.headers), kind=SpanKind.SERVER
    ) as span:
        span.set_attributes(attributes)
        response = await handler(request)
        span.set_attribute("http.response.status_code", response.status)
        if request_id := response.headers.get(headers.REQUEST_ID):
            span.set_attribute("chittycan.request_id", request_id)
        if response.status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        return response


async def metrics(request: web.Request) -> web.Response:
    """The engine's metrics in the Prometheus text format."""
    usage = UsageClient(channel=request.app[ENGINE].channel)
    try:
        exposition = await usage.metrics()
    except GatewayCallError as err:
        return call_error_response(err, calls.request_id(request))
    return web.Response(body=exposition.text.encode(), headers={"Content-Type": exposition.content_type})
