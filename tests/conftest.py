"""Shared fixtures: a running gateway stack in front of the scripted upstream, and SDK clients for it."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.stack import API_KEY, Stack, StackThread


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
