"""The scripted upstream's default OpenAI answers: chat completions (JSON and SSE), embeddings and models."""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

import orjson

from tests.upstream_wire import (
    IMAGE_TOKENS,
    RecordedRequest,
    Reply,
    answer_pieces,
    count_images,
    hex_id,
    json_reply,
    pretty_json,
    sse_reply,
    text_of,
)

CREATED = 1733000000
FINGERPRINT = "fp_chitty01"
MISSING_MODEL = "gpt-does-not-exist"
# Models answered as a local Ollama answers them: Ollama ignores credentials, so no key is needed.
LOCAL_MODELS = frozenset({"llama3", "llama3.2", "mistral", "qwen2.5"})
_DATED_MODELS = {"gpt-4o": "gpt-4o-2024-08-06"}
_MODELS = (
    ("gpt-4o", 1715367049),
    ("gpt-4o-mini", 1721172741),
    ("gpt-4.1", 1744316542),
    ("text-embedding-3-small", 1705948997),
    ("text-embedding-3-large", 1705953180),
)
_KEYS_URL = "https://platform.openai.com/account/api-keys"
_MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer "
    "auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're "
    "accessing the API from your browser and are prompted for a username and password. You can obtain an API "
    f"key from {_KEYS_URL}."
)
_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
    "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have "
    "trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)"
)
_BAD_INPUT = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
# What a model would write for get_weather, cut the way OpenAI streams argument fragments.
_ARGUMENT_FRAGMENTS = ('{"', "location", '":', ' "', "Paris", '"}')
_STATUS_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: (f"Incorrect API key provided. You can find your API key at {_KEYS_URL}.", "invalid_request_error", None),
    403: ("You are not allowed to sample from this model", "invalid_request_error", None),
    404: ("The model does not exist or you do not have access to it.", "invalid_request_error", "model_not_found"),
    429: ("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
}
_TINY_FLOAT = re.compile(rb"-?0\.0000\d+|-?\d(?:\.\d+)?e-\d+")
_SERVER_ERROR = ("The server had an error while processing your request. Sorry about that!", "server_error", None)


def openai_error(message: str, type: str, param: str | None = None, code: str | None = None) -> bytes:
    """An OpenAI error body, rendered as OpenAI renders errors (4-space indent, trailing newline)."""
    return pretty_json({"error": {"message": message, "type": type, "param": param, "code": code}}, indent=4) + b"\n"


def openai_status_body(status: int) -> bytes:
    """The error body OpenAI sends with `status`, for scripts that give a status but no body."""
    message, kind, code = _STATUS_ERRORS.get(status, _SERVER_ERROR)
    return openai_error(message, kind, None, code)


def _headers(req: RecordedRequest) -> dict[str, str]:
    return {
        "openai-version": "2020-10-01",
        "openai-processing-ms": "42",
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-limit-tokens": "30000000",
        "x-ratelimit-remaining-requests": "9999",
        "x-ratelimit-remaining-tokens": "29999993",
        "x-ratelimit-reset-requests": "6ms",
        "x-ratelimit-reset-tokens": "2m59.56s",
        "x-request-id": "req_" + hex_id(req.raw, 32, req.path),
    }


def _error(req: RecordedRequest, status: int, message: str, param: str | None = None, code: str | None = None) -> Reply:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return json_reply(status, openai_error(message, kind, param, code), _headers(req))


def _check(req: RecordedRequest, required: tuple[str, ...]) -> Reply | None:
    """OpenAI's own checks, in its order: key, JSON body, model, required fields."""
    scheme, _, key = req.headers.get("authorization", "").partition(" ")
    local = isinstance(req.json, dict) and req.json.get("model") in LOCAL_MODELS
    if (scheme.lower() != "bearer" or not key.strip()) and not local:
        return _error(req, 401, _MISSING_KEY)
    if key.strip() == "sk-bad":
        message = f"Incorrect API key provided: sk-bad. You can find your API key at {_KEYS_URL}."
        return _error(req, 401, message, code="invalid_api_key")
    if req.method == "GET":
        return None
    if not isinstance(req.json, dict):
        return _error(req, 400, _BAD_JSON)
    if not req.json.get("model"):
        return _error(req, 400, "you must provide a model parameter")
    if req.json["model"] == MISSING_MODEL:
        message = f"The model `{MISSING_MODEL}` does not exist or you do not have access to it."
        return _error(req, 404, message, code="model_not_found")
    for name in required:
        if name not in req.json:
            return _error(req, 400, f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
    return None


@dataclass(frozen=True)
class _Answer:
    pieces: list[str]  # content tokens; empty for a tool call
    tool: str | None
    finish: str


def _last_user_text(messages: list[Any]) -> str:
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return text_of(users[-1].get("content")) if users else ""


def _called_tool(body: dict[str, Any]) -> str | None:
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        return str(choice.get("function", {}).get("name"))
    if choice == "required" or "weather" in _last_user_text(body["messages"]).lower():
        return str(tools[0].get("function", {}).get("name"))
    return None


def _answer(body: dict[str, Any]) -> _Answer:
    messages = body["messages"]
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    if last.get("role") == "tool":
        text = "The tool said: " + text_of(last.get("content"))
    elif tool := _called_tool(body):
        return _Answer([], tool, "tool_calls")
    else:
        text = "Hello! You said: " + _last_user_text(messages)
    pieces, truncated = answer_pieces(text, limit)
    return _Answer(pieces, None, "length" if truncated else "stop")


def _prompt_tokens(messages: list[Any]) -> int:
    counted = (m for m in messages if isinstance(m, dict))
    return sum(
        3 + len(text_of(m.get("content")).split()) + IMAGE_TOKENS * count_images(m.get("content")) for m in counted
    )


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _logprob(token: str, top: int) -> dict[str, Any]:
    value = -int.from_bytes(hashlib.sha256(token.encode()).digest()[:2], "big") / 100000
    alternatives = [
        {"token": f"{token}{i}", "logprob": value - i, "bytes": list(f"{token}{i}".encode())} for i in range(1, top)
    ]
    head = {"token": token, "logprob": value, "bytes": list(token.encode())}
    return {**head, "top_logprobs": [head, *alternatives] if top else []}


@dataclass(frozen=True)
class _Chat:
    """A chat request with its answer decided: everything the JSON and SSE renderings share."""

    req: RecordedRequest
    answer: _Answer
    model: str
    service_tier: str
    n: int
    top_logprobs: int | None  # None unless logprobs were asked for
    prompt_tokens: int

    @property
    def id(self) -> str:
        return "chatcmpl-" + hex_id(self.req.raw, 24)

    def usage(self) -> dict[str, Any]:
        return _usage(self.prompt_tokens, self.n * len(self.answer.pieces or _ARGUMENT_FRAGMENTS))

    def tool_call(self, index: int) -> dict[str, Any]:
        call_id = "call_" + hex_id(self.req.raw, 24, f"call{index}")
        arguments = "".join(_ARGUMENT_FRAGMENTS)
        return {"id": call_id, "type": "function", "function": {"name": self.answer.tool, "arguments": arguments}}

    def message(self, index: int) -> dict[str, Any]:
        if self.answer.tool is None:
            content = "".join(self.answer.pieces)
            return {"role": "assistant", "content": content, "refusal": None, "annotations": []}
        calls = [self.tool_call(index)]
        return {"role": "assistant", "content": None, "tool_calls": calls, "refusal": None, "annotations": []}

    def logprobs(self, pieces: list[str]) -> dict[str, Any] | None:
        if self.top_logprobs is None:
            return None
        return {"content": [_logprob(piece, self.top_logprobs) for piece in pieces], "refusal": None}


def render_chat(req: RecordedRequest) -> Reply:
    """POST /v1/chat/completions, answered as today's OpenAI API renders it, JSON or SSE."""
    if (error := _check(req, ("messages",))) is not None:
        return error
    body: dict[str, Any] = req.json
    tier = body.get("service_tier")
    chat = _Chat(
        req=req,
        answer=_answer(body),
        model=_DATED_MODELS.get(body["model"], body["model"]),
        service_tier=tier if tier in ("flex", "priority") else "default",
        n=body.get("n") or 1,
        top_logprobs=(body.get("top_logprobs") or 0) if body.get("logprobs") else None,
        prompt_tokens=_prompt_tokens(body["messages"]),
    )
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return sse_reply(_chat_frames(chat, include_usage), _headers(req))
    return json_reply(200, pretty_json(_chat_body(chat)), _headers(req))


def _chat_body(chat: _Chat) -> dict[str, Any]:
    choices = [
        {
            "index": i,
            "message": chat.message(i),
            "logprobs": chat.logprobs(chat.answer.pieces),
            "finish_reason": chat.answer.finish,
        }
        for i in range(chat.n)
    ]
    return {
        "id": chat.id,
        "object": "chat.completion",
        "created": CREATED,
        "model": chat.model,
        "choices": choices,
        "usage": chat.usage(),
        "service_tier": chat.service_tier,
        "system_fingerprint": FINGERPRINT,
    }


def _chat_frames(chat: _Chat, include_usage: bool) -> list[bytes]:
    head = {"id": chat.id, "object": "chat.completion.chunk", "created": CREATED, "model": chat.model}
    head |= {"service_tier": chat.service_tier, "system_fingerprint": FINGERPRINT}

    def frame(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        chunk = {**head, "choices": choices, **({"usage": usage} if include_usage else {})}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def choice(i: int, delta: dict[str, Any], logprobs: Any = None, finish: str | None = None) -> dict[str, Any]:
        return {"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish}

    frames = []
    for i in range(chat.n):
        if chat.answer.tool is None:
            frames.append(frame([choice(i, {"role": "assistant", "content": "", "refusal": None})]))
            for piece in chat.answer.pieces:
                frames.append(frame([choice(i, {"content": piece}, chat.logprobs([piece]))]))
        else:
            call = {"index": 0, **chat.tool_call(i)}
            call["function"] = {"name": chat.answer.tool, "arguments": ""}
            delta = {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}
            frames.append(frame([choice(i, delta)]))
            for fragment in _ARGUMENT_FRAGMENTS:
                frames.append(frame([choice(i, {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]})]))
        frames.append(frame([choice(i, {}, None, chat.answer.finish)]))
    if include_usage:
        frames.append(frame([], chat.usage()))
    frames.append(b"data: [DONE]\n\n")
    return frames


def _float32(value: float) -> float:
    """The float32 nearest `value`, as the shortest decimal that reads back to it (how OpenAI prints vectors)."""
    bits = struct.pack("<f", value)
    exact = struct.unpack("<f", bits)[0]
    # 9 significant digits always round-trip a float32, and a rounding that round-trips stays good with more
    # digits, so bisect for the fewest.
    low, high = 1, 9
    while low < high:
        mid = (low + high) // 2
        if struct.pack("<f", float(f"{exact:.{mid}g}")) == bits:
            high = mid
        else:
            low = mid + 1
    return float(f"{exact:.{low}g}")


def _vector(seed: bytes, dims: int) -> list[float]:
    # shake_256 output for fewer dims is a prefix of that for more, so `dimensions` truncates and renormalises
    # the full vector, as OpenAI's text-embedding-3 models do.
    raw = struct.unpack(f"<{dims}I", hashlib.shake_256(seed).digest(4 * dims))
    values = [word / 2**31 - 1.0 for word in raw]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [_float32(v / norm) for v in values]


def _embedding_inputs(value: Any) -> list[tuple[bytes, int]] | None:
    """(hash seed, token count) per input, or None when OpenAI would reject the input."""
    if isinstance(value, str):
        return [(value.encode(), len(value.split()))] if value else None
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [(b"tokens:" + orjson.dumps(value), len(value))]
    items = [_embedding_inputs(v) if isinstance(v, str | list) else None for v in value]
    if any(item is None or len(item) != 1 for item in items):
        return None
    return [item[0] for item in items if item is not None]


def render_embeddings(req: RecordedRequest) -> Reply:
    """POST /v1/embeddings: deterministic unit vectors, float or base64 (little-endian float32)."""
    if (error := _check(req, ("input",))) is not None:
        return error
    body: dict[str, Any] = req.json
    inputs = _embedding_inputs(body["input"])
    if inputs is None:
        return _error(req, 400, _BAD_INPUT)
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        message = f"Invalid value: '{encoding}'. Supported values are: 'float' and 'base64'."
        return _error(req, 400, message, "encoding_format", "invalid_value")
    dims = body.get("dimensions") or (1536 if body["model"] == "text-embedding-3-small" else 8)
    data = []
    for index, (seed, _tokens) in enumerate(inputs):
        vector = _vector(seed, dims)
        packed = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": packed if encoding == "base64" else vector})
    tokens = sum(count for _seed, count in inputs)
    rendered = {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    # orjson writes 4.1252775e-05 as 0.000041252775; OpenAI writes it the way Python's repr does.
    body_bytes = _TINY_FLOAT.sub(lambda m: repr(float(m.group())).encode(), pretty_json(rendered))
    return json_reply(200, body_bytes, _headers(req))


def _model(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "system"}


def render_models(req: RecordedRequest) -> Reply:
    """GET /v1/models."""
    if (error := _check(req, ())) is not None:
        return error
    listing = {"object": "list", "data": [_model(name, created) for name, created in _MODELS]}
    return json_reply(200, pretty_json(listing), _headers(req))


def render_model(req: RecordedRequest) -> Reply:
    """GET /v1/models/{id}."""
    if (error := _check(req, ())) is not None:
        return error
    wanted = req.path.removeprefix("/v1/models/")
    for name, created in _MODELS:
        if name == wanted:
            return json_reply(200, pretty_json(_model(name, created)), _headers(req))
    return _error(req, 404, f"The model '{wanted}' does not exist", "model", "model_not_found")


def render_unknown_route(req: RecordedRequest) -> Reply:
    """Any other path, answered as OpenAI answers an unknown URL."""
    return _error(req, 404, f"Invalid URL ({req.method} {req.path})")
