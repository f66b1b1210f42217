"""Pure translators between chittycan.v1 and OpenAI's chat and embeddings wire format (upstream side)."""

import base64
from typing import Any

import orjson

from chittycan.v1 import completion_pb2, embedding_pb2

ROLE_NAMES = {
    completion_pb2.ROLE_SYSTEM: "system",
    completion_pb2.ROLE_DEVELOPER: "developer",
    completion_pb2.ROLE_USER: "user",
    completion_pb2.ROLE_ASSISTANT: "assistant",
    completion_pb2.ROLE_TOOL: "tool",
    completion_pb2.ROLE_FUNCTION: "function",
}
ROLES_BY_NAME = {name: role for role, name in ROLE_NAMES.items()}
FINISH_REASONS = {
    "stop": completion_pb2.FINISH_REASON_STOP,
    "length": completion_pb2.FINISH_REASON_LENGTH,
    "tool_calls": completion_pb2.FINISH_REASON_TOOL_CALLS,
    "content_filter": completion_pb2.FINISH_REASON_CONTENT_FILTER,
    "function_call": completion_pb2.FINISH_REASON_FUNCTION_CALL,
}
_TOOL_CHOICE_MODES = {
    completion_pb2.TOOL_CHOICE_MODE_NONE: "none",
    completion_pb2.TOOL_CHOICE_MODE_AUTO: "auto",
    completion_pb2.TOOL_CHOICE_MODE_REQUIRED: "required",
}
_FORMAT_TYPES = {
    completion_pb2.RESPONSE_FORMAT_TYPE_TEXT: "text",
    completion_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT: "json_object",
    completion_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA: "json_schema",
}
_SCALARS = ("temperature", "top_p", "n", "max_tokens", "max_completion_tokens", "seed", "presence_penalty",
            "frequency_penalty", "logprobs", "top_logprobs", "user", "parallel_tool_calls", "reasoning_effort",
            "service_tier", "store")  # fmt: skip
_RESPONSE_KEYS = frozenset({"id", "object", "created", "model", "choices", "usage", "service_tier",
                            "system_fingerprint"})  # fmt: skip
_MESSAGE_KEYS = frozenset({"role", "content", "refusal", "tool_calls", "function_call", "name"})
_DELTA_KEYS = frozenset({"role", "content", "refusal", "tool_calls", "function_call"})


def chat_body_from_proto(request: completion_pb2.ChatRequest, model: str, *, stream: bool) -> dict[str, Any]:
    """The OpenAI request body for `request`, addressed to the upstream `model`; streams always ask for usage."""
    body: dict[str, Any] = {"model": model, "messages": [message_to_openai(m) for m in request.messages]}
    for name in _SCALARS:
        if request.HasField(name):  # type: ignore[arg-type]
            body[name] = getattr(request, name)
    if request.stop:
        body["stop"] = request.stop[0] if request.stop_is_string and len(request.stop) == 1 else list(request.stop)
    if request.logit_bias:
        body["logit_bias"] = {k: int(v) if v.is_integer() else v for k, v in request.logit_bias.items()}
    if request.metadata:
        body["metadata"] = dict(request.metadata)
    if request.modalities:
        body["modalities"] = list(request.modalities)
    if request.tools:
        body["tools"] = [_tool_to_openai(t) for t in request.tools]
    if request.HasField("tool_choice"):
        body["tool_choice"] = _tool_choice_to_openai(request.tool_choice)
    if request.HasField("response_format"):
        body["response_format"] = _response_format_to_openai(request.response_format)
    if request.extra_json:
        body.update(orjson.loads(request.extra_json))
    if stream:
        body["stream"] = True
        options = orjson.loads(request.stream_options.extra_json) if request.stream_options.extra_json else {}
        body["stream_options"] = {"include_usage": True, **options}
    return body


def message_to_openai(message: completion_pb2.Message) -> dict[str, Any]:
    """One conversation message as OpenAI takes it."""
    out: dict[str, Any] = {"role": ROLE_NAMES.get(message.role, "user")}
    kind = message.WhichOneof("content")
    if kind == "text":
        out["content"] = message.text
    elif kind == "parts":
        out["content"] = [_part_to_openai(p) for p in message.parts.parts]
    elif "content" in message.null_fields:
        out["content"] = None
    if message.HasField("name"):
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [_tool_call_to_openai(c) for c in message.tool_calls]
    if message.HasField("tool_call_id"):
        out["tool_call_id"] = message.tool_call_id
    if message.HasField("refusal"):
        out["refusal"] = message.refusal
    elif "refusal" in message.null_fields:
        out["refusal"] = None
    if message.HasField("function_call"):
        out["function_call"] = {"name": message.function_call.name, "arguments": message.function_call.arguments}
    if message.extra_json:
        out.update(orjson.loads(message.extra_json))
    return out


def _part_to_openai(part: completion_pb2.ContentPart) -> dict[str, Any]:
    kind = part.WhichOneof("part")
    if kind == "text":
        return {"type": "text", "text": part.text.text}
    if kind == "image_url":
        image: dict[str, Any] = {"url": part.image_url.url}
        if part.image_url.detail:
            image["detail"] = part.image_url.detail
        return {"type": "image_url", "image_url": image}
    if kind == "input_audio":
        return {
            "type": "input_audio",
            "input_audio": {"data": part.input_audio.data, "format": part.input_audio.format},
        }
    if kind == "file":
        fields = ("file_data", "file_id", "filename")
        return {"type": "file", "file": {f: getattr(part.file, f) for f in fields if part.file.HasField(f)}}  # type: ignore[arg-type]
    return {"type": "refusal", "refusal": part.refusal}


def _tool_call_to_openai(call: completion_pb2.ToolCall) -> dict[str, Any]:
    out: dict[str, Any] = {"id": call.id, "type": call.type or "function"}
    if call.HasField("function"):
        out["function"] = {"name": call.function.name, "arguments": call.function.arguments}
    if call.extra_json:
        out.update(orjson.loads(call.extra_json))
    return out


def _tool_to_openai(tool: completion_pb2.Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"type": tool.type or "function"}
    if out["type"] == "function":
        function: dict[str, Any] = {"name": tool.name}
        if tool.HasField("description"):
            function["description"] = tool.description
        if tool.parameters_json:
            function["parameters"] = orjson.Fragment(tool.parameters_json)
        if tool.HasField("strict"):
            function["strict"] = tool.strict
        out["function"] = function
    if tool.extra_json:
        out.update(orjson.loads(tool.extra_json))
    return out


def _tool_choice_to_openai(choice: completion_pb2.ToolChoice) -> Any:
    kind = choice.WhichOneof("choice")
    if kind == "mode":
        return _TOOL_CHOICE_MODES.get(choice.mode, "auto")
    if kind == "function_name":
        return {"type": "function", "function": {"name": choice.function_name}}
    return orjson.Fragment(choice.other_json)


def _response_format_to_openai(fmt: completion_pb2.ResponseFormat) -> dict[str, Any]:
    out: dict[str, Any] = {"type": _FORMAT_TYPES.get(fmt.type, "text")}
    if fmt.type == completion_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        schema: dict[str, Any] = {"name": fmt.json_schema.name}
        if fmt.json_schema.HasField("description"):
            schema["description"] = fmt.json_schema.description
        if fmt.json_schema.schema_json:
            schema["schema"] = orjson.Fragment(fmt.json_schema.schema_json)
        if fmt.json_schema.HasField("strict"):
            schema["strict"] = fmt.json_schema.strict
        out["json_schema"] = schema
    return out


def response_from_openai(body: dict[str, Any]) -> completion_pb2.ChatResponse:
    """Parse a non-streamed chat completion."""
    response = completion_pb2.ChatResponse(
        id=body.get("id") or "", created=int(body.get("created") or 0), model=body.get("model") or ""
    )
    for raw in body.get("choices") or ():
        choice = response.choices.add(index=raw.get("index", 0))
        choice.finish_reason = FINISH_REASONS.get(
            raw.get("finish_reason") or "", completion_pb2.FINISH_REASON_UNSPECIFIED
        )
        _message_from_openai(raw.get("message") or {}, choice.message)
        if raw.get("logprobs"):
            _logprobs_from_openai(raw["logprobs"], choice.logprobs)
    if body.get("usage"):
        usage_from_openai(body["usage"], response.usage)
    _optional_strings(body, response, ("service_tier", "system_fingerprint"))
    _extras(body, _RESPONSE_KEYS, response)
    return response


def _message_from_openai(raw: dict[str, Any], message: completion_pb2.Message) -> None:
    message.role = ROLES_BY_NAME.get(raw.get("role") or "assistant", completion_pb2.ROLE_ASSISTANT)
    content = raw.get("content")
    if isinstance(content, str):
        message.text = content
    elif content is None and "content" in raw:
        message.null_fields.append("content")
    _optional_strings(raw, message, ("refusal",))
    if isinstance(raw.get("name"), str):
        message.name = raw["name"]
    for call in raw.get("tool_calls") or ():
        function = call.get("function") or {}
        out = message.tool_calls.add(id=call.get("id") or "", type=call.get("type") or "function")
        out.function.name = function.get("name") or ""
        out.function.arguments = function.get("arguments") or ""
    if isinstance(raw.get("function_call"), dict):
        message.function_call.name = raw["function_call"].get("name") or ""
        message.function_call.arguments = raw["function_call"].get("arguments") or ""
    _extras(raw, _MESSAGE_KEYS, message)


def chunk_from_openai(body: dict[str, Any]) -> completion_pb2.ChatChunk:
    """Parse one streamed chunk."""
    chunk = completion_pb2.ChatChunk(
        id=body.get("id") or "", created=int(body.get("created") or 0), model=body.get("model") or ""
    )
    for raw in body.get("choices") or ():
        choice = chunk.choices.add(index=raw.get("index", 0))
        choice.finish_reason = FINISH_REASONS.get(
            raw.get("finish_reason") or "", completion_pb2.FINISH_REASON_UNSPECIFIED
        )
        _delta_from_openai(raw.get("delta") or {}, choice.delta)
        if raw.get("logprobs"):
            _logprobs_from_openai(raw["logprobs"], choice.logprobs)
    if body.get("usage"):
        usage_from_openai(body["usage"], chunk.usage)
    _optional_strings(body, chunk, ("service_tier", "system_fingerprint"))
    _extras(body, _RESPONSE_KEYS, chunk)
    return chunk


def _delta_from_openai(raw: dict[str, Any], delta: completion_pb2.Delta) -> None:
    if role := raw.get("role"):
        delta.role = ROLES_BY_NAME.get(role, completion_pb2.ROLE_ASSISTANT)
    _optional_strings(raw, delta, ("content", "refusal"))
    for call in raw.get("tool_calls") or ():
        out = delta.tool_calls.add(index=call.get("index", 0))
        if call.get("id") is not None:
            out.id = call["id"]
        if call.get("type") is not None:
            out.type = call["type"]
        if isinstance(function := call.get("function"), dict):
            out.has_function = True
            if function.get("name") is not None:
                out.name = function["name"]
            if function.get("arguments") is not None:
                out.arguments = function["arguments"]
    if isinstance(raw.get("function_call"), dict):
        delta.function_call.name = raw["function_call"].get("name") or ""
        delta.function_call.arguments = raw["function_call"].get("arguments") or ""
    _extras(raw, _DELTA_KEYS, delta)


def usage_from_openai(raw: dict[str, Any], usage: completion_pb2.Usage) -> None:
    """Fill `usage` from OpenAI's usage object, keeping which detail fields were present."""
    usage.prompt_tokens = int(raw.get("prompt_tokens") or 0)
    usage.completion_tokens = int(raw.get("completion_tokens") or 0)
    usage.total_tokens = int(raw.get("total_tokens") or 0)
    if isinstance(details := raw.get("prompt_tokens_details"), dict):
        usage.prompt_tokens_details.SetInParent()
        for key, value in details.items():
            if key in ("cached_tokens", "audio_tokens") and value is not None:
                setattr(usage.prompt_tokens_details, key, int(value))
    if isinstance(details := raw.get("completion_tokens_details"), dict):
        usage.completion_tokens_details.SetInParent()
        for key, value in details.items():
            if key in _COMPLETION_DETAILS and value is not None:
                setattr(usage.completion_tokens_details, key, int(value))


_COMPLETION_DETAILS = frozenset(
    {"reasoning_tokens", "audio_tokens", "accepted_prediction_tokens", "rejected_prediction_tokens"}
)


def _logprobs_from_openai(raw: dict[str, Any], logprobs: completion_pb2.Logprobs) -> None:
    logprobs.SetInParent()
    for field in ("content", "refusal"):
        values = raw.get(field)
        if values is None:
            setattr(logprobs, f"{field}_null", True)
            continue
        for item in values:
            token = getattr(logprobs, field).add(token=item.get("token", ""), logprob=item.get("logprob", 0.0))
            _bytes_from_openai(item, token)
            for top in item.get("top_logprobs") or ():
                alt = token.top_logprobs.add(token=top.get("token", ""), logprob=top.get("logprob", 0.0))
                _bytes_from_openai(top, alt)


def _bytes_from_openai(raw: dict[str, Any], out: completion_pb2.TokenLogprob | completion_pb2.TopLogprob) -> None:
    if raw.get("bytes") is None:
        out.bytes_null = True
    else:
        out.bytes.extend(raw["bytes"])


def _optional_strings(raw: dict[str, Any], out: Any, names: tuple[str, ...]) -> None:
    """Copy string fields that have presence, and remember which were explicitly null."""
    for name in names:
        if name in raw:
            value = raw[name]
            if value is None:
                out.null_fields.append(name)
            elif isinstance(value, str):
                setattr(out, name, value)


def _extras(raw: dict[str, Any], known: frozenset[str], out: Any) -> None:
    extra = {k: v for k, v in raw.items() if k not in known}
    if extra:
        out.extra_json = orjson.dumps(extra)


def embedding_body_from_proto(request: embedding_pb2.EmbeddingRequest, model: str) -> dict[str, Any]:
    """The OpenAI embeddings request body, addressed to the upstream `model`."""
    kind = request.WhichOneof("input")
    value: Any
    if kind == "text":
        value = request.text
    elif kind == "texts":
        value = list(request.texts.texts)
    elif kind == "tokens":
        value = list(request.tokens.tokens)
    else:
        value = [list(t.tokens) for t in request.token_lists.lists]
    body: dict[str, Any] = {"model": model, "input": value}
    if request.encoding_format == embedding_pb2.ENCODING_FORMAT_BASE64:
        body["encoding_format"] = "base64"
    elif request.encoding_format == embedding_pb2.ENCODING_FORMAT_FLOAT:
        body["encoding_format"] = "float"
    if request.HasField("dimensions"):
        body["dimensions"] = request.dimensions
    if request.HasField("user"):
        body["user"] = request.user
    if request.extra_json:
        body.update(orjson.loads(request.extra_json))
    return body


def embedding_response_from_openai(body: dict[str, Any]) -> embedding_pb2.EmbeddingResponse:
    """Parse an embeddings response (float lists or base64 strings)."""
    response = embedding_pb2.EmbeddingResponse(model=body.get("model") or "")
    for item in body.get("data") or ():
        out = response.data.add(index=item.get("index", 0))
        vector = item.get("embedding")
        if isinstance(vector, str):
            out.packed = base64.b64decode(vector)
            if len(out.packed) % 4:
                raise ValueError("a base64 embedding that is not whole float32 values")
        else:
            out.values.extend(vector or ())
    usage = body.get("usage") or {}
    response.usage.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    response.usage.total_tokens = int(usage.get("total_tokens") or 0)
    return response
