"""A zero-latency OpenAI upstream for measurement: precomputed response bytes, no recording, no logging.

Run as its own process: `python -m bench.upstream --port 0` prints `READY <port>` once listening and serves
until SIGINT or SIGTERM. A chat request with `"stream": true` gets an SSE stream of `--chunks` content chunks
(or `max_tokens` chunks when the request sets it), a finish chunk, a usage chunk when
`stream_options.include_usage` is set, and `[DONE]`. `GET /stats` returns how many requests reached it, so a
benchmark can prove that cache hits never did.
"""

import argparse
import asyncio
import base64
import signal
import socket
import struct
import sys
from dataclasses import dataclass, field

import orjson
from aiohttp import web

_CREATED = 1_700_000_000
_CHAT_ID = "chatcmpl-bench0000000000000000000000"
_MODEL = "gpt-4o-2024-08-06"
_EMBED_MODEL = "text-embedding-3-small"
_ANSWER = "The quick brown fox jumps over the lazy dog while the gateway adds almost nothing at all"


@dataclass
class Responses:
    """Every body the upstream can send, built once; streams are built once per chunk count."""

    chunks: int
    dims: int
    chat: bytes = b""
    embedding_float: bytes = b""
    embedding_base64: bytes = b""
    streams: dict[tuple[int, bool], bytes] = field(default_factory=dict)
    requests: int = 0

    def __post_init__(self) -> None:
        self.chat = _chat_body(self.chunks)
        vector = [round(((i * 7919) % 2000) / 1000 - 1, 6) for i in range(self.dims)]
        self.embedding_float = _embedding_body(vector)
        self.embedding_base64 = _embedding_body(base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode())

    def stream(self, chunks: int, include_usage: bool) -> bytes:
        """The full SSE body for `chunks` content chunks (memoized)."""
        key = (chunks, include_usage)
        if (body := self.streams.get(key)) is None:
            body = self.streams[key] = _stream_body(chunks, include_usage)
        return body


def _usage(completion_tokens: int) -> dict[str, object]:
    return {
        "prompt_tokens": 25,
        "completion_tokens": completion_tokens,
        "total_tokens": 25 + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def _words(count: int) -> list[str]:
    words = _ANSWER.split()
    return [("" if i == 0 else " ") + words[i % len(words)] for i in range(count)]


def _chat_body(tokens: int) -> bytes:
    message: dict[str, object] = {
        "role": "assistant",
        "content": "".join(_words(tokens)),
        "refusal": None,
        "annotations": [],
    }
    return orjson.dumps(
        {
            "id": _CHAT_ID,
            "object": "chat.completion",
            "created": _CREATED,
            "model": _MODEL,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(tokens),
            "service_tier": "default",
            "system_fingerprint": "fp_bench",
        }
    )


def _chunk(choices: list[dict[str, object]], usage: dict[str, object] | None = None) -> bytes:
    body = {
        "id": _CHAT_ID,
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": _MODEL,
        "service_tier": "default",
        "system_fingerprint": "fp_bench",
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _stream_body(chunks: int, include_usage: bool) -> bytes:
    frames = [_chunk([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None}}])]
    frames += [_chunk([{"index": 0, "delta": {"content": word}, "finish_reason": None}]) for word in _words(chunks)]
    frames.append(_chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    if include_usage:
        frames.append(_chunk([], _usage(chunks)))
    frames.append(b"data: [DONE]\n\n")
    return b"".join(frames)


def _embedding_body(vector: object) -> bytes:
    data = [{"object": "embedding", "index": 0, "embedding": vector}]
    usage = {"prompt_tokens": 8, "total_tokens": 8}
    return orjson.dumps({"object": "list", "data": data, "model": _EMBED_MODEL, "usage": usage})


def build_app(chunks: int, dims: int) -> web.Application:
    """The upstream app: chat (JSON and SSE), embeddings and a request counter."""
    responses = Responses(chunks=chunks, dims=dims)

    async def chat(request: web.Request) -> web.Response:
        responses.requests += 1
        body = orjson.loads(await request.read())
        if not body.get("stream"):
            return web.Response(body=responses.chat, content_type="application/json")
        count = body.get("max_tokens") or body.get("max_completion_tokens") or responses.chunks
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return web.Response(body=responses.stream(int(count), include_usage), content_type="text/event-stream")

    async def embeddings(request: web.Request) -> web.Response:
        responses.requests += 1
        body = orjson.loads(await request.read())
        raw = responses.embedding_base64 if body.get("encoding_format") == "base64" else responses.embedding_float
        return web.Response(body=raw, content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps({"requests": responses.requests}), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/stats", stats)
    return app


async def _serve(port: int, chunks: int, dims: int) -> None:
    runner = web.AppRunner(build_app(chunks, dims), access_log=None, handle_signals=False)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    site = web.SockSite(runner, sock, backlog=4096)
    await site.start()
    sys.stdout.write(f"READY {sock.getsockname()[1]}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    """Serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream unless max_tokens is set")
    parser.add_argument("--dims", type=int, default=1536, help="embedding dimensions")
    args = parser.parse_args()
    import uvloop

    uvloop.run(_serve(args.port, args.chunks, args.dims))


if __name__ == "__main__":
    main()
