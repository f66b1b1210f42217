"""POST /v1/embeddings: OpenAI JSON <-> the engine's Embed call."""

import time
from typing import Any

from aiohttp import web

from chittycan.v1 import embedding_pb2
from clients.errors import GatewayCallError
from facade import calls, headers
from facade.errors import RequestError, call_error_response, request_error_response
from facade.openai_json import INT32_MAX, INT64_MAX, dumps, invalid_type, missing, parse_json_object, required_string
from facade.openai_render import embeddings_to_openai
from facade.state import ENGINE

_ENCODINGS = {"float": embedding_pb2.ENCODING_FORMAT_FLOAT, "base64": embedding_pb2.ENCODING_FORMAT_BASE64}
_HANDLED = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
MAX_INPUTS = 2048  # the spec's maxItems for every array form of `input`


def embedding_request_from_openai(body: dict[str, Any]) -> embedding_pb2.EmbeddingRequest:
    """Validate and translate an embeddings body (string, strings, token array or token arrays)."""
    request = embedding_pb2.EmbeddingRequest(model=required_string(body, "model"))
    value = body.get("input")
    if value is None:
        raise missing("input")
    if isinstance(value, str):
        request.text = value
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        request.texts.texts.extend(value)
    elif isinstance(value, list) and value and all(_is_token(v) for v in value):
        request.tokens.tokens.extend(value)
    elif isinstance(value, list) and value and all(_is_token_list(v) for v in value):
        for tokens in value:
            request.token_lists.lists.add(tokens=tokens)
    elif isinstance(value, list) and not value:
        raise RequestError("Invalid 'input': empty array.", param="input", code="empty_array")
    else:
        raise invalid_type("input", "a string, an array of strings, or an array of token arrays", value)
    if isinstance(value, list) and len(value) > MAX_INPUTS:
        raise RequestError(
            f"Invalid 'input': array too long. Expected an array with maximum length {MAX_INPUTS}, but got an array "
            f"with length {len(value)} instead.",
            param="input",
            code="array_above_max_length",
        )
    if value == "" or (isinstance(value, list) and "" in value):
        raise RequestError("Invalid 'input': empty string. An input cannot be an empty string.", param="input",
                           code="empty_string")  # fmt: skip
    encoding = body.get("encoding_format")
    if encoding is not None:
        if not isinstance(encoding, str) or encoding not in _ENCODINGS:
            raise RequestError(
                f"Invalid value: '{encoding}'. Supported values are: 'float' and 'base64'.",
                param="encoding_format",
                code="invalid_value",
            )
        request.encoding_format = _ENCODINGS[encoding]
    if (dimensions := body.get("dimensions")) is not None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int):
            raise invalid_type("dimensions", "an integer", dimensions)
        if not 1 <= dimensions <= INT32_MAX:
            raise RequestError(
                f"Invalid 'dimensions': must be between 1 and {INT32_MAX}.", param="dimensions", code="invalid_value"
            )
        request.dimensions = dimensions
    if (user := body.get("user")) is not None:
        if not isinstance(user, str):
            raise invalid_type("user", "a string", user)
        request.user = user
    extra = {k: v for k, v in body.items() if k not in _HANDLED}
    if extra:
        request.extra_json = dumps(extra, None)
    return request


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= INT64_MAX


def _is_token_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_token(v) for v in value)


async def create_embeddings(request: web.Request) -> web.Response:
    """Embeddings for every input."""
    started = time.perf_counter()
    request_id = calls.request_id(request)
    try:
        embed = embedding_request_from_openai(parse_json_object(await request.read()))
    except RequestError as err:
        return request_error_response(err, request_id)
    try:
        result = await request.app[ENGINE].embed(
            embed, api_key=calls.api_key(request), request_id=request_id, options=calls.call_options(request)
        )
    except GatewayCallError as err:
        return call_error_response(err, request_id)
    base64_encoding = embed.encoding_format == embedding_pb2.ENCODING_FORMAT_BASE64
    return web.Response(
        body=embeddings_to_openai(result.response, base64_encoding=base64_encoding),
        content_type="application/json",
        headers={headers.REQUEST_ID: request_id, **headers.from_meta(result.meta, final=True, started=started)},
    )
