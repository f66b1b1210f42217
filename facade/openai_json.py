"""OpenAI chat request JSON -> chittycan.v1.ChatRequest, with OpenAI's validation errors (param and code set)."""

from typing import Any

import orjson

from chittycan.v1 import completion_pb2
from facade.errors import RequestError

_ROLES = {
    "system": completion_pb2.ROLE_SYSTEM,
    "developer": completion_pb2.ROLE_DEVELOPER,
    "user": completion_pb2.ROLE_USER,
    "assistant": completion_pb2.ROLE_ASSISTANT,
    "tool": completion_pb2.ROLE_TOOL,
    "function": completion_pb2.ROLE_FUNCTION,
}
_TOOL_CHOICE_MODES = {
    "none": completion_pb2.TOOL_CHOICE_MODE_NONE,
    "auto": completion_pb2.TOOL_CHOICE_MODE_AUTO,
    "required": completion_pb2.TOOL_CHOICE_MODE_REQUIRED,
}
_FORMATS = {
    "text": completion_pb2.RESPONSE_FORMAT_TYPE_TEXT,
    "json_object": completion_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
    "json_schema": completion_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
}
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
# Scalar request fields: name -> (expected JSON type description, Python types, minimum, maximum); integers are
# bounded by their proto field's range at least.
_NUMBERS: dict[str, tuple[str, type | tuple[type, ...], float | None, float | None]] = {
    "temperature": ("a decimal", (int, float), 0, 2),
    "top_p": ("a decimal", (int, float), 0, 1),
    "presence_penalty": ("a decimal", (int, float), -2, 2),
    "frequency_penalty": ("a decimal", (int, float), -2, 2),
    "n": ("an integer", int, 1, 128),
    "max_tokens": ("an integer", int, 1, INT64_MAX),
    "max_completion_tokens": ("an integer", int, 1, INT64_MAX),
    "seed": ("an integer", int, -INT64_MAX - 1, INT64_MAX),
    "top_logprobs": ("an integer", int, 0, 20),
}
_STRINGS = ("user", "reasoning_effort", "service_tier")
_BOOLS = ("logprobs", "parallel_tool_calls", "store", "stream")
_HANDLED = frozenset(
    {"model", "messages", "stop", "logit_bias", "metadata", "stream_options", "tools", "tool_choice",
     "response_format", "modalities", *_NUMBERS, *_STRINGS, *_BOOLS}
)  # fmt: skip


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or OpenAI's parse error."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RequestError(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
            "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
        ) from None
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.", code="invalid_type")
    return body


def dumps(value: Any, param: str | None) -> bytes:
    """`value` as JSON for a pass-through field; OpenAI's 400 when it nests deeper than orjson writes (255)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        where = f"'{param}'" if param else "the request"
        raise RequestError(
            f"Invalid value in {where}: objects and arrays nest too deeply.", param=param, code="invalid_value"
        ) from None


def invalid_type(param: str, expected: str, value: Any) -> RequestError:
    """OpenAI's wording for a value of the wrong JSON type."""
    return RequestError(
        f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def missing(param: str) -> RequestError:
    """OpenAI's wording for a missing required parameter."""
    return RequestError(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def required_string(body: dict[str, Any], key: str, param: str | None = None) -> str:
    """A required non-empty string field; `param` is its path in the request (default: `key`)."""
    param = param or key
    value = body.get(key)
    if value is None:
        raise missing(param)
    if not isinstance(value, str):
        raise invalid_type(param, "a string", value)
    if not value:
        raise RequestError(f"Invalid '{param}': empty string.", param=param, code="empty_string")
    return value


def chat_request_from_openai(body: dict[str, Any]) -> completion_pb2.ChatRequest:
    """Validate and translate a /v1/chat/completions body; unknown fields are carried in `extra_json`."""
    request = completion_pb2.ChatRequest(model=required_string(body, "model"))
    messages = body.get("messages")
    if messages is None:
        raise missing("messages")
    if not isinstance(messages, list):
        raise invalid_type("messages", "an array", messages)
    if not messages:
        raise RequestError(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    for index, raw in enumerate(messages):
        _message(raw, request.messages.add(), f"messages[{index}]")
    for name, (expected, types, low, high) in _NUMBERS.items():
        if (value := body.get(name)) is not None:
            if isinstance(value, bool) or not isinstance(value, types):
                raise invalid_type(name, expected, value)
            _check_range(name, value, low, high)  # type: ignore[arg-type]
            setattr(request, name, value)
    for name in _STRINGS:
        if (value := body.get(name)) is not None:
            if not isinstance(value, str):
                raise invalid_type(name, "a string", value)
            setattr(request, name, value)
    for name in _BOOLS:
        if (value := body.get(name)) is not None:
            if not isinstance(value, bool):
                raise invalid_type(name, "a boolean", value)
            setattr(request, name, value)
    _stop(body.get("stop"), request)
    _logit_bias(body.get("logit_bias"), request)
    _metadata(body.get("metadata"), request)
    _modalities(body.get("modalities"), request)
    _stream_options(body.get("stream_options"), request)
    if request.HasField("stream_options") and not request.stream:
        raise RequestError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    _tools(body.get("tools"), request)
    _tool_choice(body.get("tool_choice"), request)
    _response_format(body.get("response_format"), request)
    extra = {k: v for k, v in body.items() if k not in _HANDLED}
    if extra:
        request.extra_json = dumps(extra, None)
    return request


def _check_range(name: str, value: float, low: float | None, high: float | None) -> None:
    kind = "integer" if isinstance(value, int) else "decimal"
    if low is not None and value < low:
        raise RequestError(
            f"Invalid '{name}': {kind} below minimum value. Expected a value >= {low}, but got {value} instead.",
            param=name,
            code=f"{kind}_below_min_value",
        )
    if high is not None and value > high:
        raise RequestError(
            f"Invalid '{name}': {kind} above maximum value. Expected a value <= {high}, but got {value} instead.",
            param=name,
            code=f"{kind}_above_max_value",
        )


def _message(raw: Any, message: completion_pb2.Message, param: str) -> None:
    if not isinstance(raw, dict):
        raise invalid_type(param, "an object", raw)
    role = raw.get("role")
    if role is None:
        raise missing(f"{param}.role")
    if not isinstance(role, str) or role not in _ROLES:
        raise RequestError(
            f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', "
            "and 'developer'.",
            param=f"{param}.role",
            code="invalid_value",
        )
    message.role = _ROLES[role]
    content = raw.get("content")
    if isinstance(content, str):
        message.text = content
    elif isinstance(content, list):
        message.parts.SetInParent()
        for index, part in enumerate(content):
            _part(part, message.parts.parts.add(), f"{param}.content[{index}]")
    elif content is None:
        if "content" in raw:
            message.null_fields.append("content")
        if role not in ("assistant", "function"):
            raise missing(f"{param}.content")
    else:
        raise invalid_type(f"{param}.content", "one of a string or array of objects", content)
    for name in ("name", "tool_call_id", "refusal"):
        if (value := raw.get(name)) is not None:
            if not isinstance(value, str):
                raise invalid_type(f"{param}.{name}", "a string", value)
            setattr(message, name, value)
    if role == "tool" and not message.HasField("tool_call_id"):
        raise missing(f"{param}.tool_call_id")
    calls = raw.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise invalid_type(f"{param}.tool_calls", "an array", calls)
        for index, call in enumerate(calls):
            _tool_call(call, message.tool_calls.add(), f"{param}.tool_calls[{index}]")
    if isinstance(function_call := raw.get("function_call"), dict):
        message.function_call.name = str(function_call.get("name", ""))
        message.function_call.arguments = str(function_call.get("arguments", ""))
    extra = {k: v for k, v in raw.items() if k not in _MESSAGE_KEYS}
    if extra:
        message.extra_json = dumps(extra, param)


_MESSAGE_KEYS = frozenset({"role", "content", "name", "tool_call_id", "refusal", "tool_calls", "function_call"})


def _part(raw: Any, part: completion_pb2.ContentPart, param: str) -> None:
    if not isinstance(raw, dict):
        raise invalid_type(param, "an object", raw)
    kind = raw.get("type")
    value = raw.get(kind) if isinstance(kind, str) else None
    if kind == "text" and isinstance(value, str):
        part.text.text = value
    elif kind == "image_url" and isinstance(value, dict) and isinstance(value.get("url"), str):
        part.image_url.url = value["url"]
        part.image_url.detail = str(value.get("detail") or "")
    elif kind == "input_audio" and isinstance(value, dict):
        part.input_audio.data = str(value.get("data", ""))
        part.input_audio.format = str(value.get("format", ""))
    elif kind == "file" and isinstance(value, dict):
        part.file.SetInParent()
        for name in ("file_data", "file_id", "filename"):
            if isinstance(value.get(name), str):
                setattr(part.file, name, value[name])
    elif kind == "refusal" and isinstance(value, str):
        part.refusal = value
    else:
        raise RequestError(
            f"Invalid content part at '{param}': expected a 'type' of text, image_url, input_audio, file or refusal "
            "with its matching object.",
            param=param,
            code="invalid_value",
        )


def _tool_call(raw: Any, call: completion_pb2.ToolCall, param: str) -> None:
    if not isinstance(raw, dict):
        raise invalid_type(param, "an object", raw)
    call.id = str(raw.get("id", ""))
    call.type = str(raw.get("type", "function"))
    function = raw.get("function")
    if isinstance(function, dict):
        call.function.name = str(function.get("name", ""))
        call.function.arguments = str(function.get("arguments", ""))
    extra = {k: v for k, v in raw.items() if k not in ("id", "type", "function")}
    if extra:
        call.extra_json = dumps(extra, param)


def _stop(value: Any, request: completion_pb2.ChatRequest) -> None:
    if value is None:
        return
    if isinstance(value, str):
        request.stop.append(value)
        request.stop_is_string = True
    elif isinstance(value, list) and all(isinstance(s, str) for s in value):
        if len(value) > 4:
            raise RequestError("Invalid 'stop': array too long. Expected at most 4 items.", param="stop")
        request.stop.extend(value)
    else:
        raise invalid_type("stop", "one of a string or array of strings", value)


def _logit_bias(value: Any, request: completion_pb2.ChatRequest) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise invalid_type("logit_bias", "an object", value)
    for token, bias in value.items():
        if isinstance(bias, bool) or not isinstance(bias, int | float):
            raise invalid_type(f"logit_bias.{token}", "a number", bias)
        request.logit_bias[token] = float(bias)


def _metadata(value: Any, request: completion_pb2.ChatRequest) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise invalid_type("metadata", "an object of strings", value)
    request.metadata.update(value)


def _modalities(value: Any, request: completion_pb2.ChatRequest) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid_type("modalities", "an array of strings", value)
    request.modalities.extend(value)


def _stream_options(value: Any, request: completion_pb2.ChatRequest) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise invalid_type("stream_options", "an object", value)
    include = value.get("include_usage")
    if include is not None:
        if not isinstance(include, bool):
            raise invalid_type("stream_options.include_usage", "a boolean", include)
        request.stream_options.include_usage = include
    request.stream_options.SetInParent()
    extra = {k: v for k, v in value.items() if k != "include_usage"}
    if extra:
        request.stream_options.extra_json = dumps(extra, "stream_options")


def _tools(value: Any, request: completion_pb2.ChatRequest) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        raise invalid_type("tools", "an array", value)
    for index, raw in enumerate(value):
        param = f"tools[{index}]"
        if not isinstance(raw, dict):
            raise invalid_type(param, "an object", raw)
        tool = request.tools.add(type=str(raw.get("type", "function")))
        function = raw.get("function")
        if tool.type == "function":
            if not isinstance(function, dict):
                raise missing(f"{param}.function")
            tool.name = required_string(function, "name", f"{param}.function.name")
            if isinstance(function.get("description"), str):
                tool.description = function["description"]
            if function.get("parameters") is not None:
                if not isinstance(function["parameters"], dict):
                    raise invalid_type(f"{param}.function.parameters", "an object", function["parameters"])
                tool.parameters_json = dumps(function["parameters"], f"{param}.function.parameters")
            if isinstance(function.get("strict"), bool):
                tool.strict = function["strict"]
        extra = {k: v for k, v in raw.items() if k not in ("type", "function")}
        if extra:
            tool.extra_json = dumps(extra, param)


def _tool_choice(value: Any, request: completion_pb2.ChatRequest) -> None:
    if value is None:
        return
    if isinstance(value, str):
        if value not in _TOOL_CHOICE_MODES:
            raise RequestError(
                f"Invalid value: '{value}'. Supported values are: 'none', 'auto', and 'required'.",
                param="tool_choice",
                code="invalid_value",
            )
        request.tool_choice.mode = _TOOL_CHOICE_MODES[value]
    elif isinstance(value, dict):
        function = value.get("function")
        if value.get("type") == "function" and isinstance(function, dict) and isinstance(function.get("name"), str):
            request.tool_choice.function_name = function["name"]
        else:
            request.tool_choice.other_json = dumps(value, "tool_choice")
    else:
        raise invalid_type("tool_choice", "one of a string or object", value)


def _response_format(value: Any, request: completion_pb2.ChatRequest) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise invalid_type("response_format", "an object", value)
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in _FORMATS:
        raise RequestError(
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and 'json_schema'.",
            param="response_format.type",
            code="invalid_value",
        )
    request.response_format.type = _FORMATS[kind]
    if kind == "json_schema":
        schema = value.get("json_schema")
        if not isinstance(schema, dict):
            raise missing("response_format.json_schema")
        fmt = request.response_format.json_schema
        fmt.name = required_string(schema, "name", "response_format.json_schema.name")
        if isinstance(schema.get("description"), str):
            fmt.description = schema["description"]
        if isinstance(schema.get("schema"), dict):
            fmt.schema_json = dumps(schema["schema"], "response_format.json_schema.schema")
        if isinstance(schema.get("strict"), bool):
            fmt.strict = schema["strict"]
