"""OpenAI-compatible upstreams (OpenAI, Groq, Ollama, vLLM ...): the I/O half; translators live beside it."""

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import grpc
import orjson

from chittycan.v1 import completion_pb2, embedding_pb2, error_pb2
from engine import errors
from engine.errors import GatewayError
from engine.providers.base import (
    MALFORMED,
    UpstreamCall,
    connection_error,
    malformed_error,
    timeout_error,
    truncated_error,
    upstream_error,
)
from engine.providers.openai_translate import (
    chat_body_from_proto,
    chunk_from_openai,
    embedding_body_from_proto,
    embedding_response_from_openai,
    response_from_openai,
)
from engine.providers.rate_limits import from_openai as rate_limits_from_openai
from engine.providers.sse import iter_sse_events
from engine.upstream_http import UpstreamHttp, UpstreamHttpError

_JSON = {"Content-Type": "application/json"}
T = TypeVar("T")


def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
    """Map an OpenAI-format error response, keeping its status, type, code, param and message."""
    error: dict[str, Any] = {}
    try:
        parsed = orjson.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            error = parsed["error"]
    except orjson.JSONDecodeError:
        pass
    message = str(error.get("message") or f"The upstream returned HTTP {status}.")
    detail = error_pb2.ErrorDetail(http_status=status, type=str(error.get("type") or _default_type(status)))
    if isinstance(error.get("code"), str | int):
        detail.code = str(error["code"])
    if isinstance(error.get("param"), str):
        detail.param = error["param"]
    return upstream_error(status, message, detail, headers)


def error_from_event(error: dict[str, Any]) -> GatewayError:
    """An error sent in-band after a stream started."""
    message = str(error.get("message") or "The upstream failed during the stream.")
    detail = error_pb2.ErrorDetail(http_status=500, type=str(error.get("type") or "server_error"))
    if isinstance(error.get("code"), str):
        detail.code = error["code"]
    return GatewayError(grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_ERROR, message, detail=detail)


def _default_type(status: int) -> str:
    return "server_error" if status >= 500 else "invalid_request_error"


def _refused(status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
    """The upstream's error, with the rate limits it reported alongside (OpenAI sends them with a 429)."""
    err = error_from_response(status, body, headers)
    err.rate_limits = rate_limits_from_openai(headers)
    return err


class OpenAIProvider:
    """Any upstream speaking OpenAI's /chat/completions and /embeddings."""

    def __init__(self, name: str, base_url: str, http: UpstreamHttp) -> None:
        self.name = name
        self._http = http
        self._chat_url = f"{base_url}/chat/completions"
        self._embeddings_url = f"{base_url}/embeddings"

    def _headers(self, call: UpstreamCall) -> dict[str, str]:
        if call.api_key:
            return {**_JSON, "Authorization": f"Bearer {call.api_key}"}
        return _JSON

    async def _post(self, url: str, body: dict[str, Any], call: UpstreamCall) -> Any:
        try:
            async with self._http.post(
                url, orjson.dumps(body), self._headers(call), call.timeouts(streaming=False)
            ) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise _refused(resp.status, raw, resp.headers)
                call.answer.rate_limits = rate_limits_from_openai(resp.headers)
        except TimeoutError:
            raise timeout_error(self.name) from None
        except UpstreamHttpError as exc:
            raise connection_error(self.name, exc) from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE, errors.UPSTREAM_ERROR, f"The {self.name} upstream sent invalid JSON."
            ) from None

    async def complete(self, request: completion_pb2.ChatRequest, call: UpstreamCall) -> completion_pb2.ChatResponse:
        """One non-streamed completion."""
        body = await self._post(self._chat_url, chat_body_from_proto(request, call.model, stream=False), call)
        return self._read(response_from_openai, body)

    async def stream_completion(
        self, request: completion_pb2.ChatRequest, call: UpstreamCall
    ) -> AsyncIterator[completion_pb2.ChatChunk]:
        """Chunks as the upstream sends them; a stream that ends without `[DONE]` raises UNAVAILABLE."""
        data = orjson.dumps(chat_body_from_proto(request, call.model, stream=True))
        try:
            async with self._http.post(
                self._chat_url, data, self._headers(call), call.timeouts(streaming=True)
            ) as resp:
                if resp.status != 200:
                    raise _refused(resp.status, await resp.read(), resp.headers)
                call.answer.rate_limits = rate_limits_from_openai(resp.headers)
                async for event in iter_sse_events(resp.lines()):
                    if event.data == b"[DONE]":
                        return
                    body = orjson.loads(event.data)
                    if isinstance(body.get("error"), dict):
                        raise error_from_event(body["error"])
                    yield chunk_from_openai(body)
        except TimeoutError:
            raise timeout_error(self.name) from None
        except (UpstreamHttpError, orjson.JSONDecodeError) as exc:
            raise connection_error(self.name, exc) from None
        except MALFORMED:
            raise malformed_error(self.name) from None
        raise truncated_error(self.name)

    async def embed(
        self, request: embedding_pb2.EmbeddingRequest, call: UpstreamCall
    ) -> embedding_pb2.EmbeddingResponse:
        """Embeddings for every input."""
        body = await self._post(self._embeddings_url, embedding_body_from_proto(request, call.model), call)
        return self._read(embedding_response_from_openai, body)

    def _read(self, translate: Callable[[Any], T], body: Any) -> T:
        """`translate(body)`; an answer of the wrong shape (JSON, but not OpenAI's) is the upstream's fault."""
        try:
            return translate(body)
        except MALFORMED:
            raise malformed_error(self.name) from None
