"""A deterministic in-process provider that answers with the last user text: end-to-end tests and smoke checks."""

import hashlib
import struct
from collections.abc import AsyncIterator

from chittycan.v1 import completion_pb2, embedding_pb2
from engine.providers.base import UpstreamCall

_CREATED = 1733000000
_DIMENSIONS = 16


def _last_user_text(request: completion_pb2.ChatRequest) -> str:
    for message in reversed(request.messages):
        if message.role == completion_pb2.ROLE_USER:
            if message.WhichOneof("content") == "text":
                return message.text
            return " ".join(p.text.text for p in message.parts.parts if p.WhichOneof("part") == "text")
    return ""


def _words(request: completion_pb2.ChatRequest) -> list[str]:
    words = _last_user_text(request).split() or ["(empty)"]
    limit = request.max_completion_tokens or request.max_tokens
    return words[:limit] if limit else words


def _usage(request: completion_pb2.ChatRequest, completion_tokens: int) -> completion_pb2.Usage:
    prompt = sum(len(m.text.split()) + 3 for m in request.messages)
    return completion_pb2.Usage(
        prompt_tokens=prompt, completion_tokens=completion_tokens, total_tokens=prompt + completion_tokens
    )


def _finish(request: completion_pb2.ChatRequest, words: list[str]) -> completion_pb2.FinishReason.ValueType:
    limit = request.max_completion_tokens or request.max_tokens
    whole = len(_last_user_text(request).split() or ["(empty)"])
    return completion_pb2.FINISH_REASON_LENGTH if limit and whole > limit else completion_pb2.FINISH_REASON_STOP


def _id(request: completion_pb2.ChatRequest) -> str:
    return "chatcmpl-" + hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()[:24]


class EchoProvider:
    """Repeats the last user message back, word by word when streaming; embeddings are hash-derived."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def complete(self, request: completion_pb2.ChatRequest, call: UpstreamCall) -> completion_pb2.ChatResponse:
        """The whole echo at once."""
        words = _words(request)
        response = completion_pb2.ChatResponse(id=_id(request), created=_CREATED, model=call.model)
        choice = response.choices.add(index=0, finish_reason=_finish(request, words))
        choice.message.role = completion_pb2.ROLE_ASSISTANT
        choice.message.text = " ".join(words)
        choice.message.null_fields.append("refusal")
        response.usage.CopyFrom(_usage(request, len(words)))
        return response

    async def stream_completion(
        self, request: completion_pb2.ChatRequest, call: UpstreamCall
    ) -> AsyncIterator[completion_pb2.ChatChunk]:
        """Role chunk, one chunk per word, finish chunk, usage chunk."""
        words = _words(request)
        base = completion_pb2.ChatChunk(id=_id(request), created=_CREATED, model=call.model)
        first = completion_pb2.ChatChunk()
        first.CopyFrom(base)
        first.choices.add(index=0).delta.MergeFrom(
            completion_pb2.Delta(role=completion_pb2.ROLE_ASSISTANT, content="", null_fields=["refusal"])
        )
        yield first
        for i, word in enumerate(words):
            chunk = completion_pb2.ChatChunk()
            chunk.CopyFrom(base)
            chunk.choices.add(index=0).delta.content = word if i == 0 else " " + word
            yield chunk
        last = completion_pb2.ChatChunk()
        last.CopyFrom(base)
        last.choices.add(index=0, finish_reason=_finish(request, words)).delta.SetInParent()
        yield last
        usage = completion_pb2.ChatChunk()
        usage.CopyFrom(base)
        usage.usage.CopyFrom(_usage(request, len(words)))
        yield usage

    async def embed(
        self, request: embedding_pb2.EmbeddingRequest, call: UpstreamCall
    ) -> embedding_pb2.EmbeddingResponse:
        """A unit-free vector per input, derived from its hash."""
        kind = request.WhichOneof("input")
        inputs: list[str]
        if kind == "text":
            inputs = [request.text]
        elif kind == "texts":
            inputs = list(request.texts.texts)
        elif kind == "tokens":
            inputs = [" ".join(map(str, request.tokens.tokens))]
        else:
            inputs = [" ".join(map(str, t.tokens)) for t in request.token_lists.lists]
        response = embedding_pb2.EmbeddingResponse(model=call.model)
        dims = request.dimensions or _DIMENSIONS
        for index, text in enumerate(inputs):
            digest = hashlib.sha256(text.encode()).digest() * (dims // 32 + 1)
            values = [struct.unpack("f", struct.pack("f", (b - 128) / 128))[0] for b in digest[:dims]]
            item = response.data.add(index=index)
            if request.encoding_format == embedding_pb2.ENCODING_FORMAT_BASE64:
                item.packed = struct.pack(f"<{dims}f", *values)
            else:
                item.values.extend(values)
        tokens = sum(len(t.split()) for t in inputs)
        response.usage.prompt_tokens = tokens
        response.usage.total_tokens = tokens
        return response
