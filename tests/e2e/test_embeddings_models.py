"""Embeddings and models through the gateway with the official SDK."""

import base64
import struct

import openai
import pytest

from tests import rawhttp
from tests.stack import API_KEY, Stack


def test_embedding_single_string(client: openai.OpenAI) -> None:
    res = client.embeddings.create(model="text-embedding-3-small", input="hello world")
    assert res.object == "list"
    assert len(res.data) == 1
    assert res.data[0].object == "embedding"
    assert res.data[0].index == 0
    assert len(res.data[0].embedding) == 1536
    assert res.usage.prompt_tokens > 0
    assert res.usage.total_tokens > 0


def test_embedding_list_and_float_encoding_match_upstream(client: openai.OpenAI, stack: Stack) -> None:
    res = client.embeddings.create(model="text-embedding-3-small", input=["a", "b", "c"], encoding_format="float")
    assert [d.index for d in res.data] == [0, 1, 2]
    direct = rawhttp.post(
        f"{stack.upstream_url}/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": ["a", "b", "c"], "encoding_format": "float"},
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()
    assert [d.embedding for d in res.data] == [d["embedding"] for d in direct["data"]]


def test_embedding_base64_is_float32_little_endian(client: openai.OpenAI, stack: Stack) -> None:
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="hello", encoding_format="base64", dimensions=8
    )
    encoded = raw.http_response.json()["data"][0]["embedding"]
    assert isinstance(encoded, str)
    floats = struct.unpack("<8f", base64.b64decode(encoded))
    assert stack.upstream_requests("/v1/embeddings")[-1].json["encoding_format"] == "base64"
    plain = client.embeddings.create(model="text-embedding-3-small", input="hello", dimensions=8)
    assert plain.data[0].embedding == pytest.approx(list(floats))


def test_embedding_token_arrays(client: openai.OpenAI, stack: Stack) -> None:
    res = client.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4, 5]], dimensions=8)
    assert len(res.data) == 2
    assert stack.upstream_requests("/v1/embeddings")[-1].json["input"] == [[1, 2, 3], [4, 5]]


def test_embedding_bad_input_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="text-embedding-3-small", input=[{"x": 1}])  # type: ignore[arg-type]
    assert caught.value.param == "input"


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    for model in ("gpt-4o", "gpt-4o-mini", "o3-mini", "text-embedding-3-small", "claude-sonnet-4", "llama-3-70b"):
        assert model in ids
    model = client.models.retrieve("claude-sonnet-4")
    assert (model.id, model.object, model.owned_by) == ("claude-sonnet-4", "model", "anthropic")
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("invalid-model-name")
    assert (caught.value.code, caught.value.param) == ("model_not_found", "model")
    assert caught.value.body["message"] == "The model 'invalid-model-name' does not exist"


def test_models_need_a_key(stack: Stack) -> None:
    assert rawhttp.get(f"{stack.base_url}/models").status_code == 401
