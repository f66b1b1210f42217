"""Dev mode: every model is served by the local Ollama (scripted here), at zero cost, through the usual SDK."""

from collections.abc import Callable, Iterator

import openai
import pytest

from tests.stack import API_KEY, Stack

HELLO = [{"role": "user", "content": "hello"}]
DEV_ROUTE = "ollama/llama3"


@pytest.fixture
def dev_stack(stack_factory: Callable[..., Stack]) -> Stack:
    """A gateway in dev mode (what `CHITTYCAN_MODE=dev` or `can config dev --use-ollama` sets)."""
    return stack_factory(server={"mode": "dev"})


@pytest.fixture
def dev_client(dev_stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=API_KEY, base_url=dev_stack.base_url, max_retries=0) as sdk:
        yield sdk


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4", "llama-3-70b", "gpt-4.1-nano", "claude-3-5-haiku"])
def test_every_chat_model_goes_to_ollama(dev_client: openai.OpenAI, dev_stack: Stack, model: str) -> None:
    raw = dev_client.chat.completions.with_raw_response.create(model=model, messages=HELLO)
    assert raw.headers["x-chittycan-model"] == DEV_ROUTE
    assert raw.headers["x-chittycan-cost"] == "0.000000"
    assert raw.parse().choices[0].message.content == "Hello! You said: hello"
    [sent] = dev_stack.upstream_requests()
    assert (sent.path, sent.json["model"]) == ("/v1/chat/completions", "llama3")
    assert "authorization" not in sent.headers, "the caller's provider key never goes to the local model server"
    assert dev_stack.upstream_requests("/v1/messages") == []


def test_stream_goes_to_ollama_at_zero_cost(dev_client: openai.OpenAI, dev_stack: Stack) -> None:
    raw = dev_client.chat.completions.with_raw_response.create(
        model="claude-sonnet-4", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(raw.parse())
    assert raw.headers["x-chittycan-model"] == DEV_ROUTE
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello! You said: hello"
    assert chunks[-1].usage is not None
    dev_stack.flush()
    [record] = dev_stack.call(lambda: list(dev_stack.engine.ledger.read()))
    assert (record.requested_model, record.routed_model, record.provider) == ("claude-sonnet-4", DEV_ROUTE, "ollama")
    assert record.cost_known
    assert record.cost_micros == 0
    assert record.prompt_tokens > 0


def test_embeddings_go_to_ollama(dev_client: openai.OpenAI, dev_stack: Stack) -> None:
    raw = dev_client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="hello")
    assert raw.headers["x-chittycan-model"] == DEV_ROUTE
    assert raw.headers["x-chittycan-cost"] == "0.000000"
    assert len(raw.parse().data[0].embedding) > 0
    [sent] = dev_stack.upstream_requests()
    assert (sent.path, sent.json["model"]) == ("/v1/embeddings", "llama3")


def test_parameters_anthropic_refuses_are_fine_in_dev_mode(dev_client: openai.OpenAI) -> None:
    res = dev_client.chat.completions.create(model="claude-sonnet-4", messages=HELLO, n=2)
    assert len(res.choices) == 2, "Ollama speaks OpenAI's dialect, so claude-sonnet-4 is not translated"


def test_unknown_models_are_still_404(dev_client: openai.OpenAI, dev_stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError):
        dev_client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert dev_stack.upstream_requests() == []


def test_dev_model_and_ollama_url_are_configurable(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(server={"mode": "dev", "dev_model": "qwen2.5"})
    with openai.OpenAI(api_key=API_KEY, base_url=stack.base_url, max_retries=0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO)
    assert raw.headers["x-chittycan-model"] == "ollama/qwen2.5"
    assert stack.upstream_requests()[0].json["model"] == "qwen2.5"
    assert stack.settings.providers["ollama"].base_url == f"{stack.upstream_url}/v1"


def test_models_listing_names_ollama_as_owner(dev_client: openai.OpenAI) -> None:
    models = {m.id: m.owned_by for m in dev_client.models.list()}
    assert models["gpt-4o"] == "ollama"
    assert models["claude-sonnet-4"] == "ollama"
