"""The migration playbook's Node steps as a user runs them: `npm run test:proxy` and the cost-metering script,
against the gateway's real processes in front of the scripted upstream."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.processes import REPO_ROOT, GatewayProcesses, start_gateway_processes
from tests.upstream import RecordedRequest, start_upstream

T = TypeVar("T")
API_KEY = "sk-playbook-node-0001"
COST_PROMPT = "Return the string OK."
NODE_TIMEOUT = 120.0
VERIFIED_LINES = (
    "✓ Non-streaming completion parity verified",
    "✓ Streaming parity verified",
    "✓ Embeddings parity verified",
    "✓ Error handling parity verified",
    "✓ Parameter passing parity verified",
)


class _UpstreamThread:
    """The scripted upstream on its own event loop in this process, so the test can read its request log."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="scripted-upstream", daemon=True)
        self._thread.start()
        self.upstream, self._runner, self.url = self._run(start_upstream())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def requests(self, path: str) -> list[RecordedRequest]:
        """What the upstream received at `path` so far."""

        async def snapshot() -> list[RecordedRequest]:
            return [r for r in self.upstream.requests if r.path == path]

        return self._run(snapshot())

    def close(self) -> None:
        self._run(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """The repo's node_modules, installed from package-lock.json if missing (as `make node` would)."""
    modules = REPO_ROOT / "node_modules"
    if not (modules / ".bin" / "jest").exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("node_modules is missing and npm is not on PATH: run `make node` (npm install) first")
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=REPO_ROOT,
            check=True,
            timeout=300,
        )
    return modules


@pytest.fixture(scope="module")
def upstream() -> Iterator[_UpstreamThread]:
    server = _UpstreamThread()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: _UpstreamThread) -> Iterator[GatewayProcesses]:
    with start_gateway_processes(tmp_path_factory.mktemp("node-gateway"), upstream_url=upstream.url) as processes:
        yield processes


def _run_node(
    argv: list[str], gateway: GatewayProcesses, base_variable: str = "OPENAI_BASE"
) -> subprocess.CompletedProcess[str]:
    """Run a Node command in the repo with the playbook's environment: OPENAI_API_KEY and the gateway's URL in
    `base_variable` (OPENAI_BASE, or OPENAI_API_BASE where the playbook's local-stack section sets that)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE", "OPENAI_API_BASE", "OPENAI_BASE_URL")}
    env.update({"OPENAI_API_KEY": API_KEY, base_variable: gateway.base_url})
    return subprocess.run(
        argv,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )


def _chats_with_prompt(upstream: _UpstreamThread, prompt: str) -> int:
    return sum(
        1
        for r in upstream.requests("/v1/chat/completions")
        if isinstance(r.json, dict) and r.json.get("messages") == [{"role": "user", "content": prompt}]
    )


@pytest.mark.usefixtures("node_modules")
@pytest.mark.parametrize(
    ("command", "base_variable"),
    [
        (["npm", "run", "test:proxy"], "OPENAI_BASE"),  # the parity suite's setup and CI sections
        (["npm", "test"], "OPENAI_API_BASE"),  # "Point your tests to local gateway"
    ],
)
def test_parity_suite_passes(gateway: GatewayProcesses, command: list[str], base_variable: str) -> None:
    result = _run_node(command, gateway, base_variable)
    report = f"{result.stdout}\n{gateway.stderr()}"
    assert result.returncode == 0, report
    assert "Tests:       5 passed, 5 total" in result.stdout, report
    for line in VERIFIED_LINES:
        assert line in result.stdout, report


@pytest.mark.usefixtures("node_modules")
def test_cost_metering_script_hits_the_cache(gateway: GatewayProcesses, upstream: _UpstreamThread) -> None:
    assert _chats_with_prompt(upstream, COST_PROMPT) == 0

    result = _run_node(["npx", "ts-node", "tests/cost-metering.test.ts"], gateway)

    report = f"{result.stdout}\n{gateway.stderr()}"
    assert result.returncode == 0, report
    assert "1000-calls:" in result.stdout, report
    assert "✓ Check proxy metrics" in result.stdout, report
    # 1001 identical temperature-0 calls: the first goes upstream, the other 1000 are cache hits.
    assert _chats_with_prompt(upstream, COST_PROMPT) == 1, report
