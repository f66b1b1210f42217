"""A scripted OpenAI and Anthropic upstream for tests: a real aiohttp server that records what it receives.

Run standalone with `python -m tests.upstream --port N` (0 picks a free port); it prints `READY <port>` once
listening and serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiohttp import web
from multidict import CIMultiDict

from tests.upstream_anthropic import anthropic_error, anthropic_status_body, render_messages
from tests.upstream_openai import (
    openai_error,
    openai_status_body,
    render_chat,
    render_embeddings,
    render_model,
    render_models,
    render_unknown_route,
)
from tests.upstream_wire import (
    JSON_CONTENT_TYPE,
    SSE_CONTENT_TYPE,
    RecordedRequest,
    Reply,
    is_sse,
    split_frames,
)

__all__ = [
    "FIXTURES",
    "RecordedRequest",
    "ScriptedUpstream",
    "anthropic_error",
    "load_fixture",
    "openai_error",
    "start_upstream",
]

FIXTURES = Path(__file__).parent / "fixtures"

_Render = Callable[[RecordedRequest], Reply]
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def load_fixture(relpath: str) -> bytes:
    """The bytes of `tests/fixtures/<relpath>`, e.g. `load_fixture("openai/rate_limited.json")`."""
    return (FIXTURES / relpath).read_bytes()


# Real providers take long-context prompts of many megabytes; aiohttp's default would refuse over 1 MiB.
_MAX_BODY = 64 << 20


@dataclass
class _Script:
    model: str | None
    status: int
    body: bytes | None
    headers: dict[str, str]
    times: int
    delay: float
    hang_after_chunks: int | None
    fail_after_chunks: int | None
    chunk_delay: float


class ScriptedUpstream:
    """OpenAI and Anthropic on one aiohttp app: deterministic default answers, scripted overrides, a request log.

    Disconnect detection (`stream_closed`, ending `hang_after_chunks`) needs the server to run with
    `handler_cancellation=True`, as `start_upstream` and pytest-aiohttp's `aiohttp_server` do.
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.stream_closed = asyncio.Event()
        self.request_arrived = asyncio.Event()
        self._scripts: list[_Script] = []
        self._hangs: set[asyncio.Future[None]] = set()
        self.app = web.Application(client_max_size=_MAX_BODY)
        self.app.on_shutdown.append(self._release_hangs)
        openai, anthropic = openai_status_body, anthropic_status_body
        self.app.router.add_post("/v1/chat/completions", self._handler(render_chat, openai))
        self.app.router.add_post("/v1/embeddings", self._handler(render_embeddings, openai))
        self.app.router.add_get("/v1/models", self._handler(render_models, openai))
        self.app.router.add_get("/v1/models/{model_id}", self._handler(render_model, openai))
        self.app.router.add_post("/v1/messages", self._handler(render_messages, anthropic))
        self.app.router.add_route("*", "/{tail:.*}", self._handler(render_unknown_route, openai))

    def script(
        self,
        *,
        model: str | None = None,
        status: int = 200,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        delay: float = 0.0,
        hang_after_chunks: int | None = None,
        fail_after_chunks: int | None = None,
        chunk_delay: float = 0.0,
    ) -> None:
        """Queue a behaviour for the next `times` requests whose JSON `model` matches (None matches any).

        A `body` (or a non-200 `status`, which gets that provider's error body) replaces the default answer;
        a body starting with `data:` or `event:` is streamed as SSE, one frame per write. `headers` are added
        to whatever is sent. `delay` sleeps before the headers. `hang_after_chunks` sends that many chunks
        (SSE frames; a JSON body is one chunk) and then waits until the client disconnects.
        `fail_after_chunks` sends that many and then closes the connection without the terminating chunk.
        `chunk_delay` sleeps between chunks, as a model generating tokens does.
        Scripts are used first-queued, first-used.
        """
        self._scripts.append(
            _Script(
                model,
                status,
                body,
                dict(headers or {}),
                times,
                delay,
                hang_after_chunks,
                fail_after_chunks,
                chunk_delay,
            )
        )

    def reset(self) -> None:
        """Forget recorded requests, queued scripts, `stream_closed` and `request_arrived`."""
        self.requests.clear()
        self._scripts.clear()
        self.stream_closed.clear()
        self.request_arrived.clear()

    def _take_script(self, recorded: RecordedRequest) -> _Script | None:
        model = recorded.json.get("model") if isinstance(recorded.json, dict) else None
        for script in self._scripts:
            if script.model is None or script.model == model:
                script.times -= 1
                if script.times <= 0:
                    self._scripts.remove(script)
                return script
        return None

    def _handler(self, render: _Render, status_body: Callable[[int], bytes]) -> _Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            recorded = await _record(request)
            self.requests.append(recorded)
            self.request_arrived.set()
            script = self._take_script(recorded)
            if script is None:
                return await self._send(request, render(recorded), None)
            if script.body is None and script.status == 200:
                reply = render(recorded)
            else:
                body = script.body if script.body is not None else status_body(script.status)
                if is_sse(body):
                    reply = Reply(script.status, split_frames(body), {"Content-Type": SSE_CONTENT_TYPE}, stream=True)
                else:
                    reply = Reply(script.status, [body], {"Content-Type": JSON_CONTENT_TYPE})
            if script.delay:
                await asyncio.sleep(script.delay)
            return await self._send(request, reply, script)

        return handle

    async def _send(self, request: web.Request, reply: Reply, script: _Script | None) -> web.StreamResponse:
        headers = CIMultiDict(reply.headers)
        headers.update(script.headers if script else {})
        hang = script.hang_after_chunks if script else None
        fail = script.fail_after_chunks if script else None
        cut = min((n for n in (hang, fail) if n is not None), default=None)
        if not reply.stream and (cut is None or cut >= len(reply.chunks)):
            return web.Response(status=reply.status, body=b"".join(reply.chunks), headers=headers)
        resp = web.StreamResponse(status=reply.status, headers=headers)
        if not reply.stream:
            resp.content_length = sum(len(chunk) for chunk in reply.chunks)
        await resp.prepare(request)
        try:
            pause = script.chunk_delay if script else 0.0
            for index, chunk in enumerate(reply.chunks[:cut]):
                if pause and index:
                    await asyncio.sleep(pause)
                await resp.write(chunk)
            if cut is None:
                await resp.write_eof()
                return resp
            if cut == hang:
                await self._hang()
        except (asyncio.CancelledError, ConnectionResetError):
            self.stream_closed.set()
            raise
        # Closing the transport flushes what was written, then ends the connection mid-body.
        if request.transport is not None:
            request.transport.close()
        return resp

    async def _hang(self) -> None:
        """Wait until the client goes away (the handler is cancelled) or the server shuts down."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._hangs.add(waiter)
        try:
            await waiter
        finally:
            self._hangs.discard(waiter)

    async def _release_hangs(self, _app: web.Application) -> None:
        for waiter in self._hangs:
            if not waiter.done():
                waiter.set_result(None)


async def _record(request: web.Request) -> RecordedRequest:
    raw = await request.read()
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    try:
        parsed = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        parsed = None
    return RecordedRequest(request.method, request.path, headers, parsed, raw)


async def start_upstream(host: str = "127.0.0.1", port: int = 0) -> tuple[ScriptedUpstream, web.AppRunner, str]:
    """Serve a new ScriptedUpstream on host:port (0 picks a free port); the caller awaits `runner.cleanup()`."""
    upstream = ScriptedUpstream()
    runner = web.AppRunner(upstream.app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound = runner.addresses[0][1]
    return upstream, runner, f"http://{host}:{bound}"


async def _serve(host: str, port: int) -> None:
    _upstream, runner, _url = await start_upstream(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        sys.stdout.write(f"READY {runner.addresses[0][1]}\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Command line: `python -m tests.upstream [--host H] [--port N]`."""
    parser = argparse.ArgumentParser(prog="python -m tests.upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
