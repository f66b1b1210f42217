"""Shared fixtures: a running gateway stack in front of the scripted upstream, and SDK clients for it."""

import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.stack import API_KEY, Stack, StackThread


def pytest_configure(config: pytest.Config) -> None:
    """Tests press Ctrl-C (SIGINT) on CLI subprocesses. A shell that runs `make test` as a background job starts it
    with SIGINT ignored, and children inherit an ignored signal, so they would never see it: undo that here."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Start gateways with config overrides: `stack_factory(cache={"mode": "all"})`."""
    thread = StackThread()
    counter = iter(range(1000))

    def make(data_dir: Path | None = None, **overrides: Any) -> Stack:
        directory = data_dir or tmp_path / f"data{next(counter)}"
        return thread.start(directory, overrides)

    make.thread = thread  # type: ignore[attr-defined]
    yield make
    thread.close()


@pytest.fixture
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    """A gateway with the default configuration."""
    return stack_factory()


@pytest.fixture
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    """The official sync SDK pointed at the gateway with a pass-through key."""
    with openai.OpenAI(api_key=API_KEY, base_url=stack.base_url, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def unaccepting_port() -> Iterator[int]:
    """A loopback port whose accept queue is full, so a new connection hangs in connect (its SYNs are dropped)."""
    with socket.socket() as server, socket.socket() as filler:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port: int = server.getsockname()[1]
        filler.connect(("127.0.0.1", port))
        yield port
