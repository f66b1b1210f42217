"""What every endpoint takes from an HTTP request besides its body: request id, key, cache and tenant options."""

import os

from aiohttp import web

from chittycan.v1 import gateway_pb2
from facade import headers

_BEARER = "bearer "


_REQUEST_ID = web.RequestKey("request_id", str)


def request_id(request: web.Request) -> str:
    """The request's id, in OpenAI's `req_` form: made on first use, the same for the handler, the engine call and
    the error middleware."""
    value = request.get(_REQUEST_ID)
    if value is None:
        value = request[_REQUEST_ID] = "req_" + os.urandom(16).hex()
    return value


def api_key(request: web.Request) -> str | None:
    """The bearer token of the Authorization header, if any; 401 for one no key can be (not printable ASCII),
    which gRPC metadata could not carry either."""
    value = request.headers.get("Authorization", "")
    if value[:7].lower() != _BEARER:
        return None
    key = value[7:].strip()
    if not (key.isascii() and key.isprintable()):
        raise web.HTTPUnauthorized()
    return key or None


def call_options(request: web.Request) -> gateway_pb2.CallOptions | None:
    """Cache-Control (no-store wins over no-cache) and the tenant header, as engine call options."""
    cache_control = request.headers.get("Cache-Control", "").lower()
    tenant = request.headers.get(headers.TENANT, "")
    if not cache_control and not tenant:
        return None
    options = gateway_pb2.CallOptions(tenant=tenant)
    directives = {d.strip().split("=", 1)[0] for d in cache_control.split(",")}
    if "no-store" in directives:
        options.cache_mode = gateway_pb2.CACHE_MODE_NO_STORE
    elif "no-cache" in directives:
        options.cache_mode = gateway_pb2.CACHE_MODE_NO_CACHE
    return options
