"""Pure translators between chittycan.v1 and Anthropic's Messages API (https://docs.anthropic.com/en/api/messages).

What Anthropic cannot honour is refused or dropped, never silently bent:

- Refused with a 400 naming the parameter: `n` > 1, `logprobs`, `top_logprobs` > 0, `logit_bias`,
  `response_format` json_object/json_schema, `modalities` other than text, input_audio and file content parts,
  images in system messages, image URLs that are neither http(s) nor base64 `data:` URIs, custom tools, tool_choice
  shapes other than none/auto/required/a named function, and legacy function calling (`function` messages and
  `function_call`).
- Dropped, because Anthropic has no equivalent and the answer stays valid without them: `seed`,
  `presence_penalty`, `frequency_penalty`, `reasoning_effort`, `service_tier`, `store`, request `metadata` (OpenAI
  stored-completion tags; only `user` becomes `metadata.user_id`), `stream_options` (Anthropic always reports usage
  and every stream ends with a usage chunk), tool `strict`, message `name`, image `detail`, and the request's
  `extra_json`: its fields are OpenAI-specific and are not forwarded.
- System and developer messages are hoisted, in order, into the top-level `system`, wherever they appear.
- `max_tokens` is required by Anthropic: `max_completion_tokens`, else `max_tokens`, else DEFAULT_MAX_TOKENS.
"""

from collections.abc import Iterable, Mapping
from typing import Any

import grpc
import orjson

from chittycan.v1 import completion_pb2, error_pb2
from engine import errors
from engine.errors import GatewayError, invalid_request
from engine.providers.base import upstream_error
from engine.providers.openai_translate import FINISH_REASONS, ROLE_NAMES

DEFAULT_MAX_TOKENS = 4096
"""The `max_tokens` sent when a request sets no limit, since Anthropic requires one."""

_STOP_REASONS = {
    "end_turn": FINISH_REASONS["stop"],
    "stop_sequence": FINISH_REASONS["stop"],
    "pause_turn": FINISH_REASONS["stop"],
    "max_tokens": FINISH_REASONS["length"],
    "model_context_window_exceeded": FINISH_REASONS["length"],
    "tool_use": FINISH_REASONS["tool_calls"],
    "refusal": FINISH_REASONS["content_filter"],
}
_TOOL_CHOICE_TYPES = {
    completion_pb2.TOOL_CHOICE_MODE_NONE: "none",
    completion_pb2.TOOL_CHOICE_MODE_AUTO: "auto",
    completion_pb2.TOOL_CHOICE_MODE_REQUIRED: "any",
}
_EMPTY_SCHEMA = {"type": "object", "properties": {}}
# Anthropic error type -> OpenAI rendering (HTTP status, type, code). 529 is not an OpenAI status, so overloaded
# renders as 503 (https://docs.anthropic.com/en/api/errors).
_ERROR_RENDERINGS: dict[str, tuple[int, str, str | None]] = {
    "invalid_request_error": (400, "invalid_request_error", None),
    "request_too_large": (400, "invalid_request_error", "request_too_large"),
    "authentication_error": (401, "invalid_request_error", "invalid_api_key"),
    "billing_error": (429, "insufficient_quota", "insufficient_quota"),
    "permission_error": (403, "invalid_request_error", "permission_denied"),
    "not_found_error": (404, "invalid_request_error", "model_not_found"),
    "rate_limit_error": (429, "requests", "rate_limit_exceeded"),
    "api_error": (500, "server_error", None),
    "timeout_error": (504, "server_error", "timeout"),
    "overloaded_error": (503, "server_error", "overloaded"),
}
_ERROR_TYPES_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def messages_body_from_proto(request: completion_pb2.ChatRequest, model: str, *, stream: bool) -> dict[str, Any]:
    """The Messages API body for `request`, addressed to the upstream `model`.

    Raises GatewayError INVALID_ARGUMENT (with `param`) for what Anthropic cannot honour; see the module docstring.
    """
    _reject_unsupported(request)
    system, turns = _conversation_to_anthropic(request.messages)
    body: dict[str, Any] = {"model": model, "max_tokens": _max_tokens(request), "messages": turns}
    if system:
        body["system"] = system[0]["text"] if len(system) == 1 else system
    if request.HasField("temperature"):
        body["temperature"] = request.temperature
    if request.HasField("top_p"):
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.HasField("user"):
        body["metadata"] = {"user_id": request.user}
    if request.tools:
        body["tools"] = [_tool_to_anthropic(tool, i) for i, tool in enumerate(request.tools)]
    if (choice := _tool_choice_to_anthropic(request)) is not None:
        body["tool_choice"] = choice
    if stream:
        body["stream"] = True
    return body


def _reject_unsupported(request: completion_pb2.ChatRequest) -> None:
    if request.HasField("n") and request.n > 1:
        raise invalid_request("Anthropic returns a single choice; n must be 1.", param="n")
    if request.logprobs:
        raise invalid_request("Anthropic does not return log probabilities.", param="logprobs")
    if request.HasField("top_logprobs") and request.top_logprobs > 0:
        raise invalid_request("Anthropic does not return log probabilities.", param="top_logprobs")
    if request.logit_bias:
        raise invalid_request("Anthropic does not support logit_bias.", param="logit_bias")
    if request.response_format.type in (
        completion_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
        completion_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
    ):
        raise invalid_request("Anthropic does not support JSON response formats.", param="response_format")
    if any(modality != "text" for modality in request.modalities):
        raise invalid_request("Anthropic produces text output only.", param="modalities")


def _max_tokens(request: completion_pb2.ChatRequest) -> int:
    if request.HasField("max_completion_tokens"):
        return request.max_completion_tokens
    if request.HasField("max_tokens"):
        return request.max_tokens
    return DEFAULT_MAX_TOKENS


def _conversation_to_anthropic(
    messages: Iterable[completion_pb2.Message],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System text blocks, and user/assistant turns with consecutive same-role turns merged (Anthropic alternates)."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if message.role in (completion_pb2.ROLE_SYSTEM, completion_pb2.ROLE_DEVELOPER):
            system.extend(_system_blocks(message, i))
            continue
        role, blocks = _turn_to_anthropic(message, i)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _system_blocks(message: completion_pb2.Message, i: int) -> list[dict[str, Any]]:
    blocks = _content_blocks(message, i)
    if any(block["type"] != "text" for block in blocks):
        raise invalid_request(f"Anthropic accepts only text in {ROLE_NAMES[message.role]} messages.", param="messages")
    return blocks


def _turn_to_anthropic(message: completion_pb2.Message, i: int) -> tuple[str, list[dict[str, Any]]]:
    if message.role == completion_pb2.ROLE_USER:
        return "user", _content_blocks(message, i)
    if message.role == completion_pb2.ROLE_ASSISTANT:
        return "assistant", _assistant_blocks(message, i)
    if message.role == completion_pb2.ROLE_TOOL:
        return "user", [_tool_result(message, i)]
    if message.role == completion_pb2.ROLE_FUNCTION:
        raise invalid_request("Anthropic does not support legacy function messages; use tools.", param="messages")
    raise invalid_request(f"messages[{i}] has no role.", param="messages")


def _content_blocks(message: completion_pb2.Message, i: int) -> list[dict[str, Any]]:
    kind = message.WhichOneof("content")
    if kind == "text":
        return [{"type": "text", "text": message.text}]
    if kind == "parts":
        return [_part_to_anthropic(part, i) for part in message.parts.parts]
    return []


def _assistant_blocks(message: completion_pb2.Message, i: int) -> list[dict[str, Any]]:
    # OpenAI clients send content "" beside tool_calls; Anthropic rejects empty text blocks.
    blocks = [b for b in _content_blocks(message, i) if b != {"type": "text", "text": ""}]
    if message.WhichOneof("content") is None and message.refusal:
        blocks.append({"type": "text", "text": message.refusal})
    if message.HasField("function_call"):
        raise invalid_request("Anthropic does not support legacy function_call; use tool_calls.", param="messages")
    blocks.extend(_tool_use(call, i, j) for j, call in enumerate(message.tool_calls))
    return blocks


def _tool_use(call: completion_pb2.ToolCall, i: int, j: int) -> dict[str, Any]:
    if call.type not in ("", "function"):
        raise invalid_request("Anthropic accepts only function tool calls.", param=f"messages[{i}].tool_calls[{j}]")
    param = f"messages[{i}].tool_calls[{j}].function.arguments"
    try:
        arguments = orjson.loads(call.function.arguments or "{}")
    except orjson.JSONDecodeError:
        raise invalid_request("Tool call arguments must be valid JSON for Anthropic.", param=param) from None
    if not isinstance(arguments, dict):
        raise invalid_request("Tool call arguments must be a JSON object for Anthropic.", param=param)
    return {"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments}


def _tool_result(message: completion_pb2.Message, i: int) -> dict[str, Any]:
    if not message.HasField("tool_call_id"):
        raise invalid_request("A tool message needs tool_call_id.", param=f"messages[{i}].tool_call_id")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    kind = message.WhichOneof("content")
    if kind == "text":
        block["content"] = message.text
    elif kind == "parts":
        block["content"] = _content_blocks(message, i)
    return block


def _part_to_anthropic(part: completion_pb2.ContentPart, i: int) -> dict[str, Any]:
    kind = part.WhichOneof("part")
    if kind == "text":
        return {"type": "text", "text": part.text.text}
    if kind == "refusal":
        return {"type": "text", "text": part.refusal}
    if kind == "image_url":
        return {"type": "image", "source": _image_source(part.image_url.url)}
    raise invalid_request(f"Anthropic does not accept {kind} content parts (messages[{i}]).", param="messages")


def _image_source(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, *params = header.split(";")
        if not comma or not media_type or "base64" not in params:
            raise invalid_request("Image data: URIs must be base64 (data:<media type>;base64,...).", param="messages")
        return {"type": "base64", "media_type": media_type, "data": data}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise invalid_request("Anthropic accepts image URLs over http(s) or as base64 data: URIs.", param="messages")


def _tool_to_anthropic(tool: completion_pb2.Tool, i: int) -> dict[str, Any]:
    if tool.type not in ("", "function"):
        raise invalid_request("Anthropic accepts only function tools.", param=f"tools[{i}]")
    out: dict[str, Any] = {"name": tool.name}
    if tool.HasField("description"):
        out["description"] = tool.description
    out["input_schema"] = orjson.loads(tool.parameters_json) if tool.parameters_json else dict(_EMPTY_SCHEMA)
    return out


def _tool_choice_to_anthropic(request: completion_pb2.ChatRequest) -> dict[str, Any] | None:
    choice: dict[str, Any] | None = None
    kind = request.tool_choice.WhichOneof("choice") if request.HasField("tool_choice") else None
    if kind == "mode":
        choice = {"type": _TOOL_CHOICE_TYPES.get(request.tool_choice.mode, "auto")}
    elif kind == "function_name":
        choice = {"type": "tool", "name": request.tool_choice.function_name}
    elif kind is not None:
        raise invalid_request(
            "Anthropic accepts tool_choice none, auto, required or a named function.", param="tool_choice"
        )
    if request.HasField("parallel_tool_calls") and not request.parallel_tool_calls and request.tools:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    return choice


def response_from_anthropic(body: dict[str, Any], created: int) -> completion_pb2.ChatResponse:
    """A Messages API response as a one-choice chat completion created at unix time `created`."""
    response = completion_pb2.ChatResponse(
        id="chatcmpl-" + str(body.get("id") or ""), created=created, model=str(body.get("model") or "")
    )
    choice = response.choices.add(index=0, finish_reason=_finish_reason(body.get("stop_reason")))
    message = choice.message
    message.role = completion_pb2.ROLE_ASSISTANT
    texts: list[str] = []
    for block in body.get("content") or ():
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            call = message.tool_calls.add(id=str(block.get("id") or ""), type="function")
            call.function.name = str(block.get("name") or "")
            call.function.arguments = orjson.dumps(block.get("input") or {}).decode()
    if texts:
        message.text = "".join(texts)
    else:
        message.null_fields.append("content")
    message.null_fields.append("refusal")
    usage_from_anthropic(body.get("usage") or {}, response.usage)
    return response


def _finish_reason(stop_reason: Any) -> completion_pb2.FinishReason.ValueType:
    return _STOP_REASONS.get(str(stop_reason), completion_pb2.FINISH_REASON_UNSPECIFIED)


def usage_from_anthropic(raw: dict[str, Any], usage: completion_pb2.Usage) -> None:
    """Fill `usage`: OpenAI's prompt tokens include the cache reads and writes Anthropic counts separately."""
    cache_read = int(raw.get("cache_read_input_tokens") or 0)
    cache_creation = int(raw.get("cache_creation_input_tokens") or 0)
    usage.prompt_tokens = int(raw.get("input_tokens") or 0) + cache_read + cache_creation
    usage.completion_tokens = int(raw.get("output_tokens") or 0)
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    usage.prompt_tokens_details.cached_tokens = cache_read
    usage.cache_creation_tokens = cache_creation


class StreamTranslator:
    """One stream's state: Anthropic SSE events in, OpenAI-shaped chunks out, all with the same id/created/model."""

    def __init__(self, created: int) -> None:
        self._created = created
        self._id = ""
        self._model = ""
        self._usage: dict[str, Any] = {}
        self._tool_indexes: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool call index
        self._stopped = False

    @property
    def stopped(self) -> bool:
        """Whether message_stop arrived; a stream that ends before it was truncated."""
        return self._stopped

    def chunk_from_event(self, event_name: str, data: dict[str, Any]) -> completion_pb2.ChatChunk | None:
        """The chunk one event becomes, if any; an `error` event raises its GatewayError.

        Unknown event types are skipped, as Anthropic asks (https://docs.anthropic.com/en/docs/build-with-claude/streaming).
        """
        kind = event_name or str(data.get("type") or "")
        if kind == "message_start":
            return self._start(data.get("message") or {})
        if kind == "content_block_start":
            return self._block_start(int(data.get("index") or 0), data.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(int(data.get("index") or 0), data.get("delta") or {})
        if kind == "message_delta":
            self._usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
            chunk = self._chunk()
            reason = _finish_reason((data.get("delta") or {}).get("stop_reason"))
            chunk.choices.add(index=0, finish_reason=reason).delta.SetInParent()
            return chunk
        if kind == "message_stop":
            self._stopped = True
            chunk = self._chunk()
            usage_from_anthropic(self._usage, chunk.usage)
            return chunk
        if kind == "error":
            raise error_from_event(data)
        return None

    def _chunk(self) -> completion_pb2.ChatChunk:
        return completion_pb2.ChatChunk(id=self._id, created=self._created, model=self._model)

    def _start(self, message: dict[str, Any]) -> completion_pb2.ChatChunk:
        self._id = "chatcmpl-" + str(message.get("id") or "")
        self._model = str(message.get("model") or "")
        self._usage = {k: v for k, v in (message.get("usage") or {}).items() if v is not None}
        chunk = self._chunk()
        chunk.choices.add(index=0).delta.MergeFrom(
            completion_pb2.Delta(role=completion_pb2.ROLE_ASSISTANT, content="", null_fields=["refusal"])
        )
        return chunk

    def _block_start(self, index: int, block: dict[str, Any]) -> completion_pb2.ChatChunk | None:
        if block.get("type") == "text" and block.get("text"):
            return self._content(str(block["text"]))
        if block.get("type") != "tool_use":
            return None
        tool_index = self._tool_indexes[index] = len(self._tool_indexes)
        chunk = self._chunk()
        chunk.choices.add(index=0).delta.tool_calls.add(
            index=tool_index,
            id=str(block.get("id") or ""),
            type="function",
            name=str(block.get("name") or ""),
            arguments="",
            has_function=True,
        )
        return chunk

    def _block_delta(self, index: int, delta: dict[str, Any]) -> completion_pb2.ChatChunk | None:
        if delta.get("type") == "text_delta":
            return self._content(str(delta.get("text") or ""))
        if delta.get("type") != "input_json_delta" or index not in self._tool_indexes or not delta.get("partial_json"):
            return None
        chunk = self._chunk()
        chunk.choices.add(index=0).delta.tool_calls.add(
            index=self._tool_indexes[index], arguments=str(delta["partial_json"]), has_function=True
        )
        return chunk

    def _content(self, text: str) -> completion_pb2.ChatChunk:
        chunk = self._chunk()
        chunk.choices.add(index=0).delta.content = text
        return chunk


def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
    """An Anthropic error response (`{"type": "error", "error": {type, message}}`) in OpenAI's shape.

    A `retry-after` header becomes the error's retry_after.
    """
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return _mapped_error(error if isinstance(error, dict) else {}, status, headers)


def error_from_event(data: dict[str, Any]) -> GatewayError:
    """An `error` event sent after the stream started (e.g. overloaded_error mid-stream)."""
    error = data.get("error")
    return _mapped_error(error if isinstance(error, dict) else {}, 500, {})


def _mapped_error(error: dict[str, Any], status: int, headers: Mapping[str, str]) -> GatewayError:
    kind = str(error.get("type") or _ERROR_TYPES_BY_STATUS.get(status, ""))
    message = str(error.get("message") or f"The Anthropic upstream returned HTTP {status}.")
    http_status, error_type, code = _ERROR_RENDERINGS.get(
        kind, (status, "server_error" if status >= 500 else "invalid_request_error", None)
    )
    detail = error_pb2.ErrorDetail(http_status=http_status, type=error_type)
    if code is not None:
        detail.code = code
    if kind == "billing_error":
        # Our Anthropic account cannot pay: not a rate limit, but another route may still serve.
        return GatewayError(grpc.StatusCode.RESOURCE_EXHAUSTED, errors.UPSTREAM_ERROR, message, detail=detail)
    return upstream_error(http_status, message, detail, headers)
