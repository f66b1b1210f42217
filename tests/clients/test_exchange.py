"""Calls multiplexed over the ExchangeService stream: pairing, cancellation, deadlines, protocol errors, engine
shutdown and reconnection, message size limits and stream flow control, against a real engine."""

import asyncio
import dataclasses
from collections.abc import Coroutine
from typing import Any, TypeVar

import grpc
import orjson
import pytest

from chittycan.exchange_batches import STREAM_WINDOW_EVENTS
from chittycan.v1 import completion_pb2, embedding_pb2, exchange_pb2, exchange_pb2_grpc, gateway_pb2
from clients import errors
from clients.gateway import GatewayClient, call_headers
from engine import exchange as engine_exchange
from engine.server import start_engine
from tests.stack import API_KEY, Stack

T = TypeVar("T")


def _chat(text: str, model: str = "gpt-4o") -> completion_pb2.ChatRequest:
    request = completion_pb2.ChatRequest(model=model)
    request.messages.add(role=completion_pb2.ROLE_USER, text=text)
    return request


def _embedding(text: str) -> embedding_pb2.EmbeddingRequest:
    return embedding_pb2.EmbeddingRequest(model="text-embedding-3-small", text=text, dimensions=8)


def _text(event: gateway_pb2.StreamChatResponse) -> str:
    """The content carried by one stream event (none for the header and the trailer)."""
    chunks = event.chunks.chunks if event.HasField("chunks") else [event.chunk] if event.HasField("chunk") else []
    return "".join(c.choices[0].delta.content for c in chunks if c.choices)


async def _streamed_text(client: GatewayClient, text: str) -> str:
    return "".join([_text(event) async for event in client.stream_chat(_chat(text), api_key=API_KEY)])


async def _on_stack(stack: Stack, coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro` on the stack's loop (where the upstream and engine live)."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, stack.loop))


# The exchange framed on the loop (clients.h2_stream), the exchange on grpc.aio, standalone RPCs.
TRANSPORTS = {"h2": {}, "grpc-exchange": {"h2_exchange": False}, "standalone": {"multiplex": False}}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_every_transport_gives_the_same_answers_and_errors(stack: Stack, transport: str) -> None:
    async with GatewayClient(f"127.0.0.1:{stack.engine.port}", **TRANSPORTS[transport]) as client:
        assert client.framed_here == (transport == "h2")
        answer = await client.complete(_chat("hi"), api_key=API_KEY, request_id="req_same")
        assert answer.response.choices[0].message.text == "Hello! You said: hi"
        assert answer.meta.model == "gpt-4o"
        assert await _streamed_text(client, "a b") == "Hello! You said: a b"
        vectors = await client.embed(_embedding("x"), api_key=API_KEY)
        assert len(vectors.response.data[0].values) == 8
        with pytest.raises(errors.NotFoundError) as missing:
            await client.complete(_chat("hi", model="nope"), api_key=API_KEY)
        assert (missing.value.reason, missing.value.param) == ("MODEL_NOT_FOUND", None)
        with pytest.raises(errors.AuthenticationError):
            await client.embed(_embedding("x"))
        stream = client.stream_chat(_chat("hi", model="nope"), api_key=API_KEY)
        with pytest.raises(errors.NotFoundError):
            await stream.read()
    stack.flush()
    assert next(r.request_id for r in stack.engine.ledger.read()) == "req_same"


@pytest.mark.parametrize("transport", ["h2", "grpc-exchange"])
async def test_concurrent_calls_on_one_stream_each_get_their_own_answer(stack: Stack, transport: str) -> None:
    async with GatewayClient(f"127.0.0.1:{stack.engine.port}", **TRANSPORTS[transport]) as client:

        async def complete(i: int) -> str:
            answer = await client.complete(_chat(f"c{i}"), api_key=API_KEY)
            return answer.response.choices[0].message.text

        async def embed(i: int) -> list[float]:
            return list((await client.embed(_embedding(f"e{i}"), api_key=API_KEY)).response.data[0].values)

        async with asyncio.TaskGroup() as group:
            completes = [group.create_task(complete(i)) for i in range(40)]
            streams = [group.create_task(_streamed_text(client, f"s{i}")) for i in range(20)]
            embeds = [group.create_task(embed(i)) for i in range(20)]
        assert [t.result() for t in completes] == [f"Hello! You said: c{i}" for i in range(40)]
        assert [t.result() for t in streams] == [f"Hello! You said: s{i}" for i in range(20)]
        vectors = [t.result() for t in embeds]
        assert len({tuple(v) for v in vectors}) == 20
        assert vectors[3] == await embed(3)  # the same input gets the same vector: answers were not swapped


@pytest.mark.parametrize("transport", ["h2", "grpc-exchange"])
async def test_cancelled_stream_closes_its_upstream_request_and_spares_the_others(stack: Stack, transport: str) -> None:
    stack.call(lambda: stack.upstream.script(hang_after_chunks=2))
    async with GatewayClient(f"127.0.0.1:{stack.engine.port}", **TRANSPORTS[transport]) as client:
        stream = client.stream_chat(_chat("hang"), api_key=API_KEY, request_id="req_cut")
        first = await stream.read()
        assert first is not None
        assert first.HasField("header")
        second = await stream.read()
        assert second is not None
        assert second.HasField("chunks") or second.HasField("chunk")
        answer = await client.complete(_chat("meanwhile"), api_key=API_KEY)
        assert answer.response.choices[0].message.text == "Hello! You said: meanwhile"
        stream.cancel()
        await asyncio.wait_for(_on_stack(stack, stack.upstream.stream_closed.wait()), 10)
        assert await stream.read() is None
        answer = await client.complete(_chat("after"), api_key=API_KEY)
        assert answer.response.choices[0].message.text == "Hello! You said: after"
    stack.flush()
    cut = [r for r in stack.engine.ledger.read() if r.request_id == "req_cut"]
    assert len(cut) == 1
    assert cut[0].cancelled


async def test_the_engine_yields_its_cpu_once_per_stream_and_never_for_unary_calls(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the message with a stream's first events is sent (engine.exchange._Session says why)."""
    yields: list[int] = []
    monkeypatch.setattr(engine_exchange, "_sched_yield", lambda: yields.append(1))
    async with GatewayClient(f"127.0.0.1:{stack.engine.port}") as client:
        await client.complete(_chat("hi"), api_key=API_KEY)
        await client.embed(_embedding("x"), api_key=API_KEY)
        assert yields == []
        for n in (1, 2):
            assert await _streamed_text(client, "a b c") == "Hello! You said: a b c"
            assert len(yields) == n


@pytest.mark.parametrize("transport", ["h2", "grpc-exchange"])
async def test_calls_cut_off_with_their_stream_are_still_recorded(stack: Stack, transport: str) -> None:
    """The engine records a call once its answer has gone out; calls that never send one, because the stream
    broke under them, are recorded all the same, as cancelled."""
    stack.call(lambda: stack.upstream.script(hang_after_chunks=1, times=3))
    client = GatewayClient(f"127.0.0.1:{stack.engine.port}", **TRANSPORTS[transport])
    streams = [client.stream_chat(_chat(f"cut {i}"), api_key=API_KEY, request_id=f"req_cut_{i}") for i in range(3)]
    for stream in streams:
        first = await stream.read()
        assert first is not None
        assert first.HasField("header")
    answer = await client.complete(_chat("answered"), api_key=API_KEY, request_id="req_answered")
    assert answer.response.choices[0].message.text == "Hello! You said: answered"
    await client.close()  # the stream breaks with three calls running
    wanted = {"req_answered", "req_cut_0", "req_cut_1", "req_cut_2"}
    async with asyncio.timeout(10):
        while not wanted <= set(records := {r.request_id: r for r in stack.engine.ledger.read()}):
            await _on_stack(stack, stack.engine.ledger.flush())
            await asyncio.sleep(0.05)
    assert not records["req_answered"].cancelled
    assert all(records[f"req_cut_{i}"].cancelled for i in range(3))


async def test_calls_are_recorded_while_a_reader_that_does_not_read_holds_the_stream_up(stack: Stack) -> None:
    """64 MiB of answers, more than gRPC buffers for a reader that is not reading, so the engine's writes wait;
    the calls' usage records do not wait with them. (Prompts of 4 MiB each also check that long prompts reach
    the upstream.)"""
    authorization = call_headers(API_KEY, None, None).authorization
    calls = [
        exchange_pb2.ExchangeCall(
            call_id=i,
            headers=exchange_pb2.CallHeaders(request_id=f"req_held_{i}", authorization=authorization),
            complete=gateway_pb2.CompleteRequest(request=_chat(f"{i % 10}" * (4 << 20))),
        )
        for i in range(16)
    ]
    wanted = {f"req_held_{i}" for i in range(16)}
    options = [("grpc.max_receive_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.engine.port}", options=options) as channel:
        call = exchange_pb2_grpc.ExchangeServiceStub(channel).Exchange()
        for first in range(0, 16, 4):  # four calls (16 MiB) per message
            await call.write(exchange_pb2.ExchangeRequest(calls=calls[first : first + 4]))
        async with asyncio.timeout(20):
            while not wanted <= {r.request_id for r in stack.engine.ledger.read()}:
                await _on_stack(stack, stack.engine.ledger.flush())
                await asyncio.sleep(0.05)
        events: list[exchange_pb2.ExchangeEvent] = []
        async with asyncio.timeout(20):
            while len(events) < len(calls):
                response = await call.read()
                assert response is not grpc.aio.EOF
                events += response.events
        await call.done_writing()
    assert [e.WhichOneof("event") for e in events] == ["complete"] * len(calls), [e.status for e in events]
    assert {e.complete.response.choices[0].message.text[-3:] for e in events} == {f"{i}" * 3 for i in range(10)}


async def _raw_exchange(
    stack: Stack, requests: list[exchange_pb2.ExchangeRequest], events: int
) -> list[exchange_pb2.ExchangeEvent]:
    """Send `requests` on a raw Exchange stream and collect `events` events."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.engine.port}") as channel:
        call = exchange_pb2_grpc.ExchangeServiceStub(channel).Exchange()
        for request in requests:
            await call.write(request)
        received: list[exchange_pb2.ExchangeEvent] = []
        async with asyncio.timeout(10):
            while len(received) < events:
                response = await call.read()
                assert response is not grpc.aio.EOF
                received += response.events
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF  # the stream ends once the caller is done and no call runs
        return received


async def test_the_engine_enforces_a_calls_deadline(stack: Stack) -> None:
    stack.call(lambda: stack.upstream.script(delay=5))
    headers = call_headers(API_KEY, "req_late", 0.3)
    call = exchange_pb2.ExchangeCall(
        call_id=7, headers=headers, complete=gateway_pb2.CompleteRequest(request=_chat("slow"))
    )
    [event] = await _raw_exchange(stack, [exchange_pb2.ExchangeRequest(calls=[call])], 1)
    assert event.call_id == 7
    assert event.status.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    error = errors.error_from_status(event.status)
    assert isinstance(error, errors.DeadlineExceededError)
    assert error.openai.http_status == 504


async def test_malformed_calls_end_with_invalid_argument(stack: Stack) -> None:
    stack.call(lambda: stack.upstream.script(delay=0.5))
    headers = call_headers(API_KEY, None, None)
    slow = exchange_pb2.ExchangeCall(
        call_id=1, headers=headers, complete=gateway_pb2.CompleteRequest(request=_chat("a"))
    )
    again = exchange_pb2.ExchangeCall(
        call_id=1, headers=headers, embed=gateway_pb2.EmbedRequest(request=_embedding("b"))
    )
    empty = exchange_pb2.ExchangeCall(call_id=2, headers=headers)
    events = await _raw_exchange(stack, [exchange_pb2.ExchangeRequest(calls=[slow, again, empty])], 3)
    statuses = [(e.call_id, e.status.code) for e in events if e.HasField("status")]
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert sorted(statuses) == [(1, invalid), (2, invalid)]
    [answer] = [e for e in events if e.HasField("complete")]
    assert answer.call_id == 1
    assert answer.complete.response.choices[0].message.text == "Hello! You said: a"


async def test_a_draining_engine_ends_each_stream_once_its_running_calls_end(stack: Stack) -> None:
    stack.call(lambda: stack.upstream.script(delay=0.5))
    slow = exchange_pb2.ExchangeCall(
        call_id=1, headers=call_headers(API_KEY, None, None), complete=gateway_pb2.CompleteRequest(request=_chat("a"))
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.engine.port}") as channel:
        call = exchange_pb2_grpc.ExchangeServiceStub(channel).Exchange()
        await call.write(exchange_pb2.ExchangeRequest(calls=[slow]))
        await asyncio.wait_for(_on_stack(stack, stack.upstream.request_arrived.wait()), 10)
        stack.call(stack.engine.exchange.drain)
        async with asyncio.timeout(10):
            response = await call.read()
            assert response.events[0].complete.response.choices[0].message.text == "Hello! You said: a"
            assert await call.read() is grpc.aio.EOF  # though this side never closed
        assert await call.code() == grpc.StatusCode.OK


@pytest.mark.parametrize("transport", ["h2", "grpc-exchange"])
async def test_calls_fail_while_the_engine_is_down_and_work_once_it_is_back(stack: Stack, transport: str) -> None:
    port = stack.engine.port
    async with GatewayClient(f"127.0.0.1:{port}", **TRANSPORTS[transport]) as client:
        assert (await client.complete(_chat("up"), api_key=API_KEY)).response.choices[0].message.text
        await _on_stack(stack, stack.engine.stop(grace=5))
        with pytest.raises(errors.UnavailableError):
            await client.complete(_chat("down"), api_key=API_KEY)
        with pytest.raises(errors.UnavailableError):
            await client.stream_chat(_chat("down"), api_key=API_KEY).read()
        settings = dataclasses.replace(stack.settings, engine_addr=f"127.0.0.1:{port}", engine_unix="")
        stack.engine = await _on_stack(stack, start_engine(settings))
        await client.wait_ready(10)
        answer = await client.complete(_chat("back"), api_key=API_KEY)
        assert answer.response.choices[0].message.text == "Hello! You said: back"


async def test_a_call_too_large_for_a_message_fails_alone(stack: Stack) -> None:
    huge = _chat("x" * (65 << 20))
    async with GatewayClient(f"127.0.0.1:{stack.engine.port}") as client:
        with pytest.raises(errors.InvalidRequestError, match="64 MiB"):
            await client.complete(huge, api_key=API_KEY)
        with pytest.raises(errors.InvalidRequestError, match="64 MiB"):
            await client.stream_chat(huge, api_key=API_KEY).read()
        answer = await client.complete(_chat("small"), api_key=API_KEY)
        assert answer.response.choices[0].message.text == "Hello! You said: small"


def _sse_body(chunks: int) -> bytes:
    frame = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}],
    }
    return b"".join(b"data: " + orjson.dumps(frame) + b"\n\n" for _ in range(chunks)) + b"data: [DONE]\n\n"


async def test_a_stream_sends_no_more_than_its_window_until_the_reader_credits_more(stack: Stack) -> None:
    chunks = STREAM_WINDOW_EVENTS + 40
    # Spaced chunks arrive one by one, so each is one event: more events than the window holds.
    stack.call(lambda: stack.upstream.script(body=_sse_body(chunks), chunk_delay=0.001))
    start = exchange_pb2.ExchangeCall(
        call_id=1,
        headers=call_headers(API_KEY, None, None),
        stream_chat=gateway_pb2.StreamChatRequest(request=_chat("long")),
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.engine.port}") as channel:
        call = exchange_pb2_grpc.ExchangeServiceStub(channel).Exchange()
        await call.write(exchange_pb2.ExchangeRequest(calls=[start]))
        arrived: asyncio.Queue[exchange_pb2.ExchangeEvent] = asyncio.Queue()

        async def receive() -> None:
            async for response in call:
                for event in response.events:
                    arrived.put_nowait(event)

        async with asyncio.TaskGroup() as group:
            receiver = group.create_task(receive())
            async with asyncio.timeout(10):
                events = [await arrived.get() for _ in range(STREAM_WINDOW_EVENTS)]
            assert all(e.HasField("stream_chat") for e in events)
            # The last 40 chunks leave the upstream within ~40 ms; an unbounded sender would pass them on.
            await asyncio.sleep(0.5)
            assert arrived.empty(), "the engine sent beyond the window without credit"
            credit = exchange_pb2.CallCredit(call_id=1, events=STREAM_WINDOW_EVENTS)
            await call.write(exchange_pb2.ExchangeRequest(credits=[credit]))
            async with asyncio.timeout(10):
                while not (event := await arrived.get()).HasField("status"):
                    events.append(event)
            assert event.status.code == grpc.StatusCode.OK.value[0]
            await call.done_writing()
            await receiver
    text = "".join(_text(e.stream_chat) for e in events)
    assert text == "x" * chunks


async def test_the_client_credits_what_its_reader_takes(stack: Stack) -> None:
    chunks = 2 * STREAM_WINDOW_EVENTS + 10
    stack.call(lambda: stack.upstream.script(body=_sse_body(chunks), chunk_delay=0.0005))
    async with GatewayClient(f"127.0.0.1:{stack.engine.port}") as client:
        async with asyncio.timeout(20):  # without credits the stream would stop after the first window
            assert await _streamed_text(client, "long") == "x" * chunks
