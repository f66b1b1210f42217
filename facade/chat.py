"""POST /v1/chat/completions: JSON or SSE, translated to the engine's Complete and StreamChat calls."""

import logging
import time

from aiohttp import web

from chittycan.v1 import completion_pb2, gateway_pb2
from clients.errors import GatewayCallError
from facade import calls, headers, sse
from facade.errors import RequestError, call_error_body, call_error_response, request_error_response
from facade.openai_json import chat_request_from_openai, parse_json_object
from facade.openai_render import chunk_to_openai, response_to_openai
from facade.state import ENGINE

log = logging.getLogger(__name__)


async def create_chat_completion(request: web.Request) -> web.StreamResponse:
    """Validate, call the engine, render the answer (or its error) exactly as OpenAI would."""
    started = time.perf_counter()
    request_id = calls.request_id(request)
    try:
        chat = chat_request_from_openai(parse_json_object(await request.read()))
    except RequestError as err:
        return request_error_response(err, request_id)
    engine = request.app[ENGINE]
    key, options = calls.api_key(request), calls.call_options(request)
    if chat.stream:
        return await _stream(request, chat, key, options, request_id, started)
    try:
        result = await engine.complete(chat, api_key=key, request_id=request_id, options=options)
    except GatewayCallError as err:
        return call_error_response(err, request_id)
    return web.Response(
        body=response_to_openai(result.response),
        content_type="application/json",
        headers={headers.REQUEST_ID: request_id, **headers.from_meta(result.meta, final=True, started=started)},
    )


async def _stream(
    request: web.Request,
    chat: completion_pb2.ChatRequest,
    key: str | None,
    options: gateway_pb2.CallOptions | None,
    request_id: str,
    started: float,
) -> web.StreamResponse:
    """Errors before the first byte get their real status; after it, one in-band error event and no [DONE]."""
    usage_field = chat.stream_options.include_usage
    stream = request.app[ENGINE].stream_chat(chat, api_key=key, request_id=request_id, options=options)
    try:
        try:
            first = await stream.read()
        except GatewayCallError as err:
            return call_error_response(err, request_id)
        meta = first.header if first is not None and first.HasField("header") else gateway_pb2.ResponseMeta()
        response_headers = {headers.REQUEST_ID: request_id, **headers.from_meta(meta, final=False, started=started)}
        response = await sse.start(request, response_headers)
        ending = b""  # the cost comment, then [DONE] (or the error) and the end of the body: one write
        try:
            while (event := await stream.read()) is not None:
                if event.HasField("chunks"):  # what arrived together leaves together: one write, one frame each
                    frames = [sse.data_frame(chunk_to_openai(c, usage_field=usage_field)) for c in event.chunks.chunks]
                    await response.write(b"".join(frames))
                elif event.HasField("chunk"):
                    await response.write(sse.data_frame(chunk_to_openai(event.chunk, usage_field=usage_field)))
                elif event.HasField("trailer") and event.trailer.HasField("cost_micros"):
                    cost = headers.format_usd(event.trailer.cost_micros).encode()
                    ending = sse.comment_frame(headers.COST_COMMENT + cost)
            ending += sse.DONE
        except GatewayCallError as err:
            ending += sse.data_frame(call_error_body(err))
        await response.write_eof(ending)
        return response
    finally:
        stream.cancel()
