"""chittycan.v1 responses -> OpenAI JSON bytes, in OpenAI's key order, with its nulls where it sends them."""

import base64
import struct
from typing import Any

import orjson

from chittycan.v1 import completion_pb2, embedding_pb2, model_pb2

_ROLE_NAMES = {
    completion_pb2.ROLE_SYSTEM: "system",
    completion_pb2.ROLE_DEVELOPER: "developer",
    completion_pb2.ROLE_USER: "user",
    completion_pb2.ROLE_ASSISTANT: "assistant",
    completion_pb2.ROLE_TOOL: "tool",
    completion_pb2.ROLE_FUNCTION: "function",
}
_FINISH = {
    completion_pb2.FINISH_REASON_STOP: "stop",
    completion_pb2.FINISH_REASON_LENGTH: "length",
    completion_pb2.FINISH_REASON_TOOL_CALLS: "tool_calls",
    completion_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
    completion_pb2.FINISH_REASON_FUNCTION_CALL: "function_call",
}
_PROMPT_DETAILS = ("cached_tokens", "audio_tokens")
_COMPLETION_DETAILS = ("reasoning_tokens", "audio_tokens", "accepted_prediction_tokens", "rejected_prediction_tokens")


def response_to_openai(response: completion_pb2.ChatResponse) -> bytes:
    """A chat.completion body, indented as OpenAI sends it."""
    out: dict[str, Any] = {
        "id": response.id,
        "object": "chat.completion",
        "created": response.created,
        "model": response.model,
        "choices": [
            {
                "index": c.index,
                "message": _message(c.message),
                "logprobs": _logprobs(c.logprobs) if c.HasField("logprobs") else None,
                "finish_reason": _FINISH.get(c.finish_reason),
            }
            for c in response.choices
        ],
    }
    if response.HasField("usage"):
        out["usage"] = usage_to_openai(response.usage)
    _optional(response, out, ("service_tier", "system_fingerprint"))
    _merge_extra(response.extra_json, out)
    return orjson.dumps(out, option=orjson.OPT_INDENT_2)


def chunk_to_openai(chunk: completion_pb2.ChatChunk, *, usage_field: bool) -> bytes:
    """A chat.completion.chunk, compact. `usage_field`: the client asked for usage, so every chunk has the key."""
    out: dict[str, Any] = {"id": chunk.id, "object": "chat.completion.chunk", "created": chunk.created}
    out["model"] = chunk.model
    _optional(chunk, out, ("service_tier", "system_fingerprint"))
    out["choices"] = [
        {
            "index": c.index,
            "delta": _delta(c.delta),
            "logprobs": _logprobs(c.logprobs) if c.HasField("logprobs") else None,
            "finish_reason": _FINISH.get(c.finish_reason),
        }
        for c in chunk.choices
    ]
    if chunk.HasField("usage"):
        out["usage"] = usage_to_openai(chunk.usage)
    elif usage_field:
        out["usage"] = None
    _merge_extra(chunk.extra_json, out)
    return orjson.dumps(out)


def _message(message: completion_pb2.Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": _ROLE_NAMES.get(message.role, "assistant")}
    out["content"] = message.text if message.WhichOneof("content") == "text" else None
    if message.HasField("name"):
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": c.type or "function", "function": {"name": c.function.name,
             "arguments": c.function.arguments}} | (orjson.loads(c.extra_json) if c.extra_json else {})
            for c in message.tool_calls
        ]  # fmt: skip
    if message.HasField("function_call"):
        out["function_call"] = {"name": message.function_call.name, "arguments": message.function_call.arguments}
    if message.HasField("refusal"):
        out["refusal"] = message.refusal
    elif "refusal" in message.null_fields:
        out["refusal"] = None
    _merge_extra(message.extra_json, out)
    return out


def _delta(delta: completion_pb2.Delta) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if delta.role:
        out["role"] = _ROLE_NAMES.get(delta.role, "assistant")
    if delta.HasField("content"):
        out["content"] = delta.content
    elif "content" in delta.null_fields:
        out["content"] = None
    if delta.HasField("function_call"):
        out["function_call"] = {"name": delta.function_call.name, "arguments": delta.function_call.arguments}
    if delta.tool_calls:
        out["tool_calls"] = [_tool_call_delta(c) for c in delta.tool_calls]
    if delta.HasField("refusal"):
        out["refusal"] = delta.refusal
    elif "refusal" in delta.null_fields:
        out["refusal"] = None
    _merge_extra(delta.extra_json, out)
    return out


def _tool_call_delta(call: completion_pb2.ToolCallDelta) -> dict[str, Any]:
    out: dict[str, Any] = {"index": call.index}
    if call.HasField("id"):
        out["id"] = call.id
    if call.HasField("type"):
        out["type"] = call.type
    if call.has_function or call.HasField("name") or call.HasField("arguments"):
        function: dict[str, Any] = {}
        if call.HasField("name"):
            function["name"] = call.name
        if call.HasField("arguments"):
            function["arguments"] = call.arguments
        out["function"] = function
    return out


def usage_to_openai(usage: completion_pb2.Usage) -> dict[str, Any]:
    """OpenAI's usage object; detail objects and their fields only where the upstream sent them."""
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.HasField("prompt_tokens_details"):
        out["prompt_tokens_details"] = _present(usage.prompt_tokens_details, _PROMPT_DETAILS)
    if usage.HasField("completion_tokens_details"):
        out["completion_tokens_details"] = _present(usage.completion_tokens_details, _COMPLETION_DETAILS)
    return out


def _present(details: Any, names: tuple[str, ...]) -> dict[str, int]:
    return {name: getattr(details, name) for name in names if details.HasField(name)}


def _logprobs(logprobs: completion_pb2.Logprobs) -> dict[str, Any]:
    return {
        "content": None if logprobs.content_null else [_token(t) for t in logprobs.content],
        "refusal": None if logprobs.refusal_null else [_token(t) for t in logprobs.refusal],
    }


def _token(token: completion_pb2.TokenLogprob) -> dict[str, Any]:
    return {
        "token": token.token,
        "logprob": token.logprob,
        "bytes": None if token.bytes_null else list(token.bytes),
        "top_logprobs": [
            {"token": t.token, "logprob": t.logprob, "bytes": None if t.bytes_null else list(t.bytes)}
            for t in token.top_logprobs
        ],
    }


def _optional(message: Any, out: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        if message.HasField(name):
            out[name] = getattr(message, name)
        elif name in message.null_fields:
            out[name] = None


def _merge_extra(extra_json: bytes, out: dict[str, Any]) -> None:
    if extra_json:
        out.update(orjson.loads(extra_json))


def embeddings_to_openai(response: embedding_pb2.EmbeddingResponse, *, base64_encoding: bool) -> bytes:
    """An embeddings list; vectors as numbers, or base64 of little-endian float32 when the client asked for it."""
    data = [
        {"object": "embedding", "index": item.index, "embedding": _vector(item, base64_encoding)}
        for item in response.data
    ]
    usage = {"prompt_tokens": response.usage.prompt_tokens, "total_tokens": response.usage.total_tokens}
    out = {"object": "list", "data": data, "model": response.model, "usage": usage}
    return orjson.dumps(out, option=orjson.OPT_INDENT_2)


def _vector(item: embedding_pb2.Embedding, base64_encoding: bool) -> str | list[float]:
    """The vector in the encoding the client asked for, whichever the upstream answered in."""
    if base64_encoding:
        packed = item.packed or struct.pack(f"<{len(item.values)}f", *item.values)
        return base64.b64encode(packed).decode()
    if item.packed and not item.values:
        return list(struct.unpack(f"<{len(item.packed) // 4}f", item.packed))
    return list(item.values)


def model_to_openai(model: model_pb2.Model) -> dict[str, Any]:
    """One model object."""
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by}
