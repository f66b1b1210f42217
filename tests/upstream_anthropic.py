"""The scripted upstream's default Anthropic Messages API answers, JSON and SSE, as api.anthropic.com sends them."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from itertools import pairwise
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
    sse_reply,
    text_of,
)

MISSING_MODEL = "claude-does-not-exist"
_PREAMBLE = "I'll check that for you."
# Claude's tool input as input_json_delta fragments; the first delta of a tool_use block is always empty.
_INPUT_FRAGMENTS = ("", '{"location": ', '"Paris', '"}')
_STATUS_ERRORS = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    529: ("overloaded_error", "Overloaded"),
}
_SERVER_ERROR = ("api_error", "Internal server error")


def anthropic_error(type: str, message: str) -> bytes:
    """An Anthropic error body, compact as api.anthropic.com sends it."""
    return orjson.dumps({"type": "error", "error": {"type": type, "message": message}})


def anthropic_status_body(status: int) -> bytes:
    """The error body Anthropic sends with `status`, for scripts that give a status but no body."""
    return anthropic_error(*_STATUS_ERRORS.get(status, _SERVER_ERROR))


def _headers(req: RecordedRequest) -> dict[str, str]:
    return {
        "request-id": "req_011C" + hex_id(req.raw, 20, "anthropic"),
        "anthropic-ratelimit-requests-limit": "4000",
        "anthropic-ratelimit-requests-remaining": "3999",
        "anthropic-ratelimit-requests-reset": _rfc3339(time.time() + 1),
        "anthropic-ratelimit-tokens-limit": "800000",
        "anthropic-ratelimit-tokens-remaining": "799950",
        "anthropic-ratelimit-tokens-reset": _rfc3339(time.time() + 60),
    }


def _rfc3339(unix: float) -> str:
    """A time as Anthropic writes its rate-limit resets: RFC 3339, UTC, whole seconds."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(req: RecordedRequest, status: int, message: str) -> Reply:
    kind = _STATUS_ERRORS.get(status, _SERVER_ERROR)[0]
    return json_reply(status, anthropic_error(kind, message), _headers(req))


def _role_error(messages: list[Any]) -> str | None:
    if not messages:
        return "messages: at least one message is required"
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    for i, role in enumerate(roles):
        if role == "system":
            return (
                'messages: Unexpected role "system". The Messages API accepts a top-level `system` parameter, '
                'not "system" as an input message role.'
            )
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
    if roles[0] != "user":
        return 'messages: first message must use the "user" role'
    for before, after in pairwise(roles):
        if before == after:
            alternate = 'messages: roles must alternate between "user" and "assistant"'
            return f'{alternate}, but found multiple "{after}" roles in a row'
    return None


def _check(req: RecordedRequest) -> Reply | None:
    """Anthropic's own checks, in its order: key, version header, body, required fields, model, roles."""
    # The SDKs send `x-api-key`, or (newer ones) the same key as `Authorization: Bearer`.
    scheme, _, bearer = req.headers.get("authorization", "").partition(" ")
    key = req.headers.get("x-api-key") or (bearer.strip() if scheme.lower() == "bearer" else "")
    if not key:
        return _error(req, 401, "x-api-key header is required")
    if key == "sk-bad":
        return _error(req, 401, "invalid x-api-key")
    if "anthropic-version" not in req.headers:
        return _error(req, 400, "anthropic-version: header is required")
    if not isinstance(req.json, dict):
        return _error(req, 400, "There was an issue with your request body: it is not valid JSON.")
    for name in ("model", "messages", "max_tokens"):
        if name not in req.json:
            return _error(req, 400, f"{name}: Field required")
    if req.json["model"] == MISSING_MODEL:
        return _error(req, 404, f"model: {MISSING_MODEL}")
    if not isinstance(req.json["messages"], list):
        return _error(req, 400, "messages: Input should be a valid list")
    if (message := _role_error(req.json["messages"])) is not None:
        return _error(req, 400, message)
    return None


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [block for block in content or [] if isinstance(block, dict)]


def _called_tool(body: dict[str, Any], text: str) -> tuple[str, bool] | None:
    """(tool name, forced) when Claude would call a tool."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice")
    if not isinstance(choice, dict):
        choice = {"type": "auto"}
    if not tools or choice.get("type") == "none":
        return None
    if choice.get("type") == "tool":
        return str(choice.get("name")), True
    if choice.get("type") == "any":
        return str(tools[0].get("name")), True
    return (str(tools[0].get("name")), False) if "weather" in text.lower() else None


def _input_tokens(body: dict[str, Any]) -> int:
    total = len(text_of(body.get("system")).split())
    for message in body["messages"]:
        blocks = _blocks(message.get("content"))
        total += 3 + len(text_of(blocks).split()) + IMAGE_TOKENS * count_images(blocks)
    return total


def _content(req: RecordedRequest) -> tuple[list[dict[str, Any]], str, int]:
    """The answer's content blocks, stop reason and output tokens."""
    body: dict[str, Any] = req.json
    users = [_blocks(m.get("content")) for m in body["messages"] if m.get("role") == "user"]
    blocks = users[-1] if body["messages"][-1].get("role") == "user" else []
    results = [block for block in blocks if block.get("type") == "tool_result"]
    user_text = text_of([block for block in users[-1] if block.get("type") == "text"])
    if results:
        text = "The tool said: " + text_of(results)
    elif called := _called_tool(body, user_text):
        name, forced = called
        tool_id = "toolu_01" + hex_id(req.raw, 22, "toolu")
        tool_use = {"type": "tool_use", "id": tool_id, "name": name, "input": {"location": "Paris"}}
        preamble = [] if forced else [{"type": "text", "text": _PREAMBLE}]
        return [*preamble, tool_use], "tool_use", len(_INPUT_FRAGMENTS) + (0 if forced else len(_PREAMBLE.split()))
    else:
        text = "Hello! You said: " + user_text
    pieces, truncated = answer_pieces(text, body.get("max_tokens"))
    return [{"type": "text", "text": "".join(pieces)}], "max_tokens" if truncated else "end_turn", len(pieces)


def render_messages(req: RecordedRequest) -> Reply:
    """POST /v1/messages: a message, or its event stream when `stream` is true."""
    if (error := _check(req)) is not None:
        return error
    body: dict[str, Any] = req.json
    content, stop_reason, output_tokens = _content(req)
    usage = {"input_tokens": _input_tokens(body), "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    message: dict[str, Any] = {"id": "msg_01" + hex_id(req.raw, 22, "msg"), "type": "message", "role": "assistant"}
    message |= {"model": body["model"], "content": content, "stop_reason": stop_reason, "stop_sequence": None}
    if not body.get("stream"):
        message["usage"] = {**usage, "output_tokens": output_tokens}
        return json_reply(200, orjson.dumps(message), _headers(req))
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    frames = [_event("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(content):
        frames += _block_events(index, block)
        if index == 0:
            # Anthropic sends a ping after the first content_block_start.
            frames.insert(2, b'event: ping\ndata: {"type": "ping"}\n\n')
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    frames.append(
        _event("message_delta", {"type": "message_delta", "delta": delta, "usage": {"output_tokens": output_tokens}})
    )
    frames.append(_event("message_stop", {"type": "message_stop"}))
    return sse_reply(frames, _headers(req))


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _block_events(index: int, block: dict[str, Any]) -> list[bytes]:
    if block["type"] == "text":
        start: dict[str, Any] = {"type": "text", "text": ""}
        words = block["text"].split(" ")
        deltas = [{"type": "text_delta", "text": w if i == 0 else " " + w} for i, w in enumerate(words)]
    else:
        start = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": fragment} for fragment in _INPUT_FRAGMENTS]
    frames = [_event("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})]
    frames += [
        _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas
    ]
    frames.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return frames
