"""GET /v1/models and /v1/models/{model}."""

import orjson
from aiohttp import web

from clients.errors import GatewayCallError
from facade import calls, headers
from facade.errors import call_error_response
from facade.openai_render import model_to_openai
from facade.state import ENGINE


async def list_models(request: web.Request) -> web.Response:
    """Every routable model, as OpenAI's list object."""
    request_id = calls.request_id(request)
    try:
        result = await request.app[ENGINE].list_models(api_key=calls.api_key(request), request_id=request_id)
    except GatewayCallError as err:
        return call_error_response(err, request_id)
    body = {"object": "list", "data": [model_to_openai(m) for m in result.models]}
    return _json(body, request_id)


async def retrieve_model(request: web.Request) -> web.Response:
    """One model, or 404 model_not_found."""
    request_id = calls.request_id(request)
    try:
        result = await request.app[ENGINE].get_model(
            request.match_info["model"], api_key=calls.api_key(request), request_id=request_id
        )
    except GatewayCallError as err:
        return call_error_response(err, request_id)
    return _json(model_to_openai(result.model), request_id)


def _json(body: object, request_id: str) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_INDENT_2),
        content_type="application/json",
        headers={headers.REQUEST_ID: request_id},
    )
