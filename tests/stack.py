"""A whole gateway for tests: scripted upstream, engine and facade on loopback, served from a background thread.

Running the servers on their own event loop lets tests drive them with the official *sync* SDKs as well as the
async ones, exactly as a user would.
"""

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from engine.config import Settings, load_settings
from engine.server import Engine, start_engine
from facade.app import create_app
from tests.upstream import ScriptedUpstream, start_upstream

T = TypeVar("T")
API_KEY = "sk-test-passthrough-0001"


def gateway_settings(data_dir: Path, upstream_url: str, overrides: dict[str, Any] | None = None) -> Settings:
    """Settings pointing every provider at the scripted upstream; `overrides` as a config file would hold them."""
    env = {
        "CHITTYCAN_CONFIG": str(data_dir / "absent.toml"),
        "CHITTYCAN_DATA_DIR": str(data_dir),
        "CHITTYCAN_ENGINE_ADDR": "127.0.0.1:0",
        "OPENAI_API_KEY": "sk-gateway-openai",
        "ANTHROPIC_API_KEY": "sk-ant-gateway",
        "GROQ_API_KEY": "gsk-gateway",
    }
    base: dict[str, Any] = {
        "providers": {
            "openai": {"base_url": f"{upstream_url}/v1"},
            "anthropic": {"base_url": upstream_url},
            "groq": {"base_url": f"{upstream_url}/v1"},
            "ollama": {"base_url": upstream_url},
        },
        "retry": {"backoff_initial": 0.001, "backoff_max": 0.002},
    }
    return load_settings(env, _deep_merge(base, overrides or {}))


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass
class Stack:
    """The running servers and their addresses."""

    loop: asyncio.AbstractEventLoop
    upstream: ScriptedUpstream
    upstream_url: str
    engine: Engine
    base_url: str  # the facade's OpenAI base URL, ending in /v1
    settings: Settings
    _runners: list[web.AppRunner] = field(default_factory=list)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the servers' loop and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        """Run a plain function on the servers' loop (for touching loop-bound objects)."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    @property
    def root_url(self) -> str:
        """The facade's root URL."""
        return self.base_url.removesuffix("/v1")

    def upstream_requests(self, path: str | None = None) -> list[Any]:
        """What the scripted upstream received (optionally only at `path`)."""
        requests = self.call(lambda: list(self.upstream.requests))
        return [r for r in requests if path is None or r.path == path]

    def flush(self) -> None:
        """Wait until the engine's queued store writes (cache, ledger) are committed."""
        self.run(self.engine.ledger.flush())


class StackThread:
    """Owns the background loop; `start()` brings a Stack up, `stop()` tears it down."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="gateway-stack", daemon=True)
        self._thread.start()
        self._stacks: list[Stack] = []
        self._upstream: tuple[ScriptedUpstream, web.AppRunner, str] | None = None

    def _run(self, coro: Awaitable[T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def start(self, data_dir: Path, overrides: dict[str, Any] | None = None) -> Stack:
        """Start (or reuse) the upstream, then a fresh engine and facade with `overrides`."""
        if self._upstream is None:
            self._upstream = self._run(start_upstream())
        upstream, _, upstream_url = self._upstream
        settings = gateway_settings(data_dir, upstream_url, overrides)
        return self._run(self._start(settings, upstream, upstream_url))

    async def _start(self, settings: Settings, upstream: ScriptedUpstream, upstream_url: str) -> Stack:
        engine = await start_engine(settings)
        runner = web.AppRunner(create_app(f"127.0.0.1:{engine.port}"), handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        stack = Stack(self.loop, upstream, upstream_url, engine, f"http://127.0.0.1:{port}/v1", settings, [runner])
        self._stacks.append(stack)
        return stack

    def stop_stack(self, stack: Stack) -> None:
        """Stop one engine and facade (the upstream stays)."""
        self._run(self._stop(stack))
        self._stacks.remove(stack)

    async def _stop(self, stack: Stack) -> None:
        for runner in stack._runners:
            await runner.cleanup()
        await stack.engine.stop(grace=1.0)

    def close(self) -> None:
        """Stop everything and the loop."""
        for stack in list(self._stacks):
            self.stop_stack(stack)
        if self._upstream is not None:
            self._run(self._upstream[1].cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
