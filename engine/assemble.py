"""Streams and whole answers, one from the other: assemble chunks into a ChatResponse, replay one as chunks."""

from collections.abc import Iterable

from chittycan.v1 import completion_pb2


def response_from_chunks(chunks: Iterable[completion_pb2.ChatChunk]) -> completion_pb2.ChatResponse:
    """The ChatResponse a stream adds up to: content, refusal and tool-call arguments concatenated per choice."""
    response = completion_pb2.ChatResponse()
    choices: dict[int, completion_pb2.Choice] = {}
    calls: dict[tuple[int, int], completion_pb2.ToolCall] = {}
    texts: dict[int, list[str]] = {}
    for chunk in chunks:
        if not response.id:
            response.id, response.created, response.model = chunk.id, chunk.created, chunk.model
            if chunk.HasField("service_tier"):
                response.service_tier = chunk.service_tier
            if chunk.HasField("system_fingerprint"):
                response.system_fingerprint = chunk.system_fingerprint
        if chunk.HasField("usage"):
            response.usage.CopyFrom(chunk.usage)
        for part in chunk.choices:
            choice = choices.get(part.index)
            if choice is None:
                choice = choices[part.index] = completion_pb2.Choice(index=part.index)
                choice.message.role = completion_pb2.ROLE_ASSISTANT
            delta = part.delta
            if delta.HasField("content"):
                texts.setdefault(part.index, []).append(delta.content)
            if delta.HasField("refusal"):
                choice.message.refusal = choice.message.refusal + delta.refusal
            for call_delta in delta.tool_calls:
                call = calls.get((part.index, call_delta.index))
                if call is None:
                    call = calls[(part.index, call_delta.index)] = choice.message.tool_calls.add()
                call.id = call_delta.id or call.id
                call.type = call_delta.type or call.type or "function"
                call.function.name = call_delta.name or call.function.name
                call.function.arguments += call_delta.arguments
            if part.HasField("logprobs"):
                choice.logprobs.content.extend(part.logprobs.content)
                choice.logprobs.refusal.extend(part.logprobs.refusal)
            if part.finish_reason:
                choice.finish_reason = part.finish_reason
    for index in sorted(choices):
        choice = choices[index]
        if index in texts:
            choice.message.text = "".join(texts[index])
        else:
            choice.message.null_fields.append("content")
        if not choice.message.HasField("refusal"):
            choice.message.null_fields.append("refusal")
        response.choices.append(choice)
    return response


def chunks_from_response(response: completion_pb2.ChatResponse) -> list[completion_pb2.ChatChunk]:
    """Replay an answer as OpenAI streams one: role chunk, content, tool calls, finish chunk, then usage."""
    chunks: list[completion_pb2.ChatChunk] = []

    def new_chunk() -> completion_pb2.ChatChunk:
        chunk = completion_pb2.ChatChunk(id=response.id, created=response.created, model=response.model)
        if response.HasField("service_tier"):
            chunk.service_tier = response.service_tier
        if response.HasField("system_fingerprint"):
            chunk.system_fingerprint = response.system_fingerprint
        chunks.append(chunk)
        return chunk

    for choice in response.choices:
        message = choice.message
        first = new_chunk().choices.add(index=choice.index)
        first.delta.role = completion_pb2.ROLE_ASSISTANT
        if message.tool_calls:
            first.delta.null_fields.append("content")
        else:
            first.delta.content = ""
        first.delta.null_fields.append("refusal")
        if message.WhichOneof("content") == "text" and message.text:
            new_chunk().choices.add(index=choice.index).delta.content = message.text
        if message.HasField("refusal"):
            new_chunk().choices.add(index=choice.index).delta.refusal = message.refusal
        for position, call in enumerate(message.tool_calls):
            delta = new_chunk().choices.add(index=choice.index).delta
            delta.tool_calls.add(
                index=position,
                id=call.id,
                type=call.type or "function",
                name=call.function.name,
                arguments=call.function.arguments,
                has_function=True,
            )
        last = new_chunk().choices.add(index=choice.index, finish_reason=choice.finish_reason)
        last.delta.SetInParent()
        if choice.HasField("logprobs"):
            last.logprobs.CopyFrom(choice.logprobs)
    if response.HasField("usage"):
        new_chunk().usage.CopyFrom(response.usage)
    return chunks
