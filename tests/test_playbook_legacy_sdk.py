"""The migration playbook's Python step with the pre-1.0 SDK (`openai.api_base = ...`), run in its own virtualenv
against the gateway's real processes."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.processes import REPO_ROOT, GatewayProcesses, start_gateway_processes

LEGACY_VENV = REPO_ROOT / ".venv-legacy"
# openai 0.28 asks for base64 embeddings unless told otherwise and decodes them with numpy, which it does not
# install itself (it is in its `datalib` extra); a real 0.28 user calling Embedding.create has it too.
LEGACY_REQUIREMENTS = ("openai==0.28.*", "numpy")
INSTALL_TIMEOUT = 300.0
SCRIPT_TIMEOUT = 60.0

# Runs inside the legacy virtualenv (openai 0.28, stdlib only besides it); argv[1] is the gateway's base URL.
LEGACY_SCRIPT = """
import json
import sys

import openai

openai.api_key = "sk-playbook-legacy-0001"
openai.api_base = sys.argv[1]

chat = openai.ChatCompletion.create(model="gpt-4o", messages=[{"role": "user", "content": "Say hello in 3 words."}])

stream_content = ""
stream_objects = set()
for chunk in openai.ChatCompletion.create(
    model="gpt-4o", messages=[{"role": "user", "content": "Count to 3."}], stream=True
):
    stream_objects.add(chunk["object"])
    for choice in chunk["choices"]:
        stream_content += choice["delta"].get("content") or ""

embedding = openai.Embedding.create(model="text-embedding-3-small", input="hello world")

error = None
try:
    openai.ChatCompletion.create(model="invalid-model-name", messages=[{"role": "user", "content": "test"}])
except openai.error.InvalidRequestError as exc:
    error = {"class": type(exc).__name__, "http_status": exc.http_status, "code": exc.code}

vector = embedding["data"][0]["embedding"]
print(json.dumps({
    "sdk_version": openai.version.VERSION,
    "chat": {
        "id": chat["id"],
        "object": chat["object"],
        "content": chat["choices"][0]["message"]["content"],
        "finish_reason": chat["choices"][0]["finish_reason"],
        "usage": dict(chat["usage"]),
    },
    "stream": {"content": stream_content, "objects": sorted(stream_objects)},
    "embedding": {
        "object": embedding["object"],
        "length": len(vector),
        "all_floats": all(isinstance(x, float) for x in vector),
    },
    "error": error,
}))
"""


@pytest.fixture(scope="session")
def legacy_python() -> Path:
    """The interpreter of `.venv-legacy/` with openai 0.28, created once and reused across sessions.

    Creation needs PyPI; without it this fails (it never skips), since the playbook's Python step would go
    untested. A lock file keeps concurrent sessions from building it at the same time.
    """
    LEGACY_VENV.mkdir(exist_ok=True)
    python = LEGACY_VENV / "bin" / "python"
    stamp = LEGACY_VENV / ".installed"
    with (LEGACY_VENV / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = " ".join(LEGACY_REQUIREMENTS)
        if not stamp.exists() or stamp.read_text() != wanted:
            _run_or_fail([sys.executable, "-m", "venv", str(LEGACY_VENV)], "create .venv-legacy")
            pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *LEGACY_REQUIREMENTS]
            _run_or_fail(pip, f"pip install {wanted} into .venv-legacy (is PyPI reachable?)")
            stamp.write_text(wanted)
    return python


def _run_or_fail(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False)
    if result.returncode != 0:
        pytest.fail(f"could not {what} (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcesses]:
    with start_gateway_processes(tmp_path_factory.mktemp("legacy-gateway")) as processes:
        yield processes


@pytest.fixture(scope="module")
def legacy_results(legacy_python: Path, gateway: GatewayProcesses) -> dict[str, Any]:
    """What the legacy SDK script saw, parsed from the JSON it prints."""
    result = subprocess.run(
        [str(legacy_python), "-c", LEGACY_SCRIPT, gateway.base_url],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{gateway.stderr()}"
    parsed: dict[str, Any] = orjson.loads(result.stdout)
    return parsed


def test_legacy_sdk_is_0_28(legacy_results: dict[str, Any]) -> None:
    assert legacy_results["sdk_version"].startswith("0.28.")


def test_legacy_chat_completion(legacy_results: dict[str, Any]) -> None:
    chat = legacy_results["chat"]
    assert chat["id"].startswith("chatcmpl-")
    assert chat["object"] == "chat.completion"
    assert chat["content"] == "Hello! You said: Say hello in 3 words."
    assert chat["finish_reason"] == "stop"
    usage = chat["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_legacy_streaming_reassembles(legacy_results: dict[str, Any]) -> None:
    stream = legacy_results["stream"]
    assert stream["objects"] == ["chat.completion.chunk"]
    assert stream["content"] == "Hello! You said: Count to 3."


def test_legacy_embedding(legacy_results: dict[str, Any]) -> None:
    embedding = legacy_results["embedding"]
    assert embedding["object"] == "list"
    assert embedding["length"] == 1536
    assert embedding["all_floats"]


def test_legacy_unknown_model_is_invalid_request(legacy_results: dict[str, Any]) -> None:
    assert legacy_results["error"] == {"class": "InvalidRequestError", "http_status": 404, "code": "model_not_found"}
