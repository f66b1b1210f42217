"""The Python client library (async and sync) against a real engine: calls, streams, deadlines, typed errors."""

import grpc
import pytest

from chittycan.v1 import completion_pb2, embedding_pb2
from clients import errors
from clients.gateway import GatewayClient
from clients.sync import SyncGatewayClient
from tests.stack import API_KEY, Stack


def _chat(model: str = "gpt-4o", text: str = "hi") -> completion_pb2.ChatRequest:
    request = completion_pb2.ChatRequest(model=model)
    request.messages.add(role=completion_pb2.ROLE_USER, text=text)
    return request


def test_sync_client_calls_and_errors(stack: Stack) -> None:
    with SyncGatewayClient(f"127.0.0.1:{stack.engine.port}") as client:
        answer = client.complete(_chat(), api_key=API_KEY, request_id="req_sync_1")
        assert answer.response.choices[0].message.text == "Hello! You said: hi"
        assert answer.meta.model == "gpt-4o"
        events = list(client.stream_chat(_chat(text="a b"), api_key=API_KEY))
        assert events[0].HasField("header")
        assert events[-1].HasField("trailer")
        chunks = [c for e in events if e.HasField("chunks") for c in e.chunks.chunks]
        text = "".join(c.choices[0].delta.content for c in chunks if c.choices)
        assert text == "Hello! You said: a b"
        vectors = client.embed(
            embedding_pb2.EmbeddingRequest(model="text-embedding-3-small", text="x", dimensions=8), api_key=API_KEY
        )
        assert len(vectors.response.data[0].values) == 8
        assert "gpt-4o" in [m.id for m in client.list_models(api_key=API_KEY).models]
        with pytest.raises(errors.NotFoundError) as caught:
            client.complete(_chat(model="nope"), api_key=API_KEY)
        assert caught.value.reason == "MODEL_NOT_FOUND"
        assert caught.value.openai.code == "model_not_found"
        assert caught.value.param is None
        with pytest.raises(errors.AuthenticationError):
            client.complete(_chat())


async def test_async_client_deadline_and_upstream_detail(stack: Stack) -> None:
    async with GatewayClient(f"127.0.0.1:{stack.engine.port}") as client:
        stack.call(lambda: stack.upstream.script(delay=3))
        with pytest.raises(errors.DeadlineExceededError) as caught:
            await client.complete(_chat(), api_key=API_KEY, deadline=0.3)
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        stack.call(lambda: stack.upstream.reset())
        stack.call(lambda: stack.upstream.script(status=429, headers={"retry-after": "60"}))
        with pytest.raises(errors.RateLimitError) as limited:
            await client.complete(_chat(), api_key=API_KEY)
        assert limited.value.retry_after == 60
        assert limited.value.openai.http_status == 429
