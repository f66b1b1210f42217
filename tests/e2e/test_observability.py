"""Traces, /metrics and the usage stream, end to end: real facade, engine and scripted upstream on loopback.

Spans are captured twice: with the SDK's in-memory exporter (facade and engine in this process), and by a real
OTLP/HTTP receiver on loopback that the gateway processes export to.
"""

import asyncio
import io
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from google.protobuf import timestamp_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from chittycan.v1 import usage_pb2
from clients.admin import read_master_key
from clients.errors import AuthenticationError
from clients.usage import UsageClient
from engine.request_log import RequestLog
from engine.server import Engine, start_engine
from engine.telemetry import Telemetry
from facade.app import create_app
from tests import rawhttp
from tests.processes import start_gateway_processes
from tests.prometheus_text import parse_samples, sample_value
from tests.stack import API_KEY, Stack, gateway_settings
from tests.upstream import start_upstream

PROMPT = "the prompt text 7f3a9c must never reach a trace"
FACADE_CHAT, ENGINE_COMPLETE, ENGINE_STREAM = (
    "POST /v1/chat/completions",
    "chittycan.v1.GatewayService/Complete",
    "chittycan.v1.GatewayService/StreamChat",
)


class _Ended(SpanProcessor):
    """Wakes waiting tests whenever a span ends, so they wait on an event instead of sleeping."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()

    def on_end(self, span: ReadableSpan) -> None:
        self.changed.set()


@dataclass
class Traced:
    """A gateway whose facade and engine both trace into one in-memory exporter."""

    exporter: InMemorySpanExporter
    ended: _Ended
    engine: Engine
    base_url: str
    request_lines: io.StringIO

    async def request_line(self, request_id: str) -> dict[str, Any]:
        """The engine's request-log line for `request_id`, once written."""
        async with asyncio.timeout(10):
            while True:
                for line in self.request_lines.getvalue().splitlines():
                    if (fields := orjson.loads(line))["request_id"] == request_id:
                        return fields  # type: ignore[no-any-return]
                await asyncio.sleep(0.02)

    async def spans_when(self, ready: Callable[[Sequence[ReadableSpan]], bool]) -> list[ReadableSpan]:
        async with asyncio.timeout(10):
            while not ready(spans := self.exporter.get_finished_spans()):
                self.ended.changed.clear()
                if not ready(spans := self.exporter.get_finished_spans()):
                    await self.ended.changed.wait()
        return list(spans)

    def sdk(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key=API_KEY, base_url=self.base_url, max_retries=0)


@pytest.fixture
async def traced_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    cleanups: list[Callable[[], Any]] = []

    async def start(*, trace_content: bool = False) -> Traced:
        exporter, ended = InMemorySpanExporter(), _Ended()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        provider.add_span_processor(ended)
        _, runner, upstream_url = await start_upstream()
        cleanups.append(runner.cleanup)
        settings = gateway_settings(tmp_path / f"data{len(cleanups)}", upstream_url)
        lines = io.StringIO()
        telemetry = Telemetry(provider, trace_content=trace_content)
        engine = await start_engine(settings, telemetry=telemetry, request_log=RequestLog(lines))
        cleanups.append(lambda: engine.stop(grace=1.0))
        facade = TestServer(create_app(f"127.0.0.1:{engine.port}", tracer_provider=provider), host="127.0.0.1")
        await facade.start_server()
        cleanups.append(facade.close)
        return Traced(exporter, ended, engine, str(facade.make_url("/v1")), lines)

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()


def _traceparent() -> tuple[int, int, str]:
    trace_id, span_id = secrets.randbits(128), secrets.randbits(64)
    return trace_id, span_id, f"00-{trace_id:032x}-{span_id:016x}-01"


def _one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    [span] = [s for s in spans if s.name == name]
    return span


def _child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    return span.parent is not None and span.parent.span_id == parent.context.span_id


def _text_of(spans: Sequence[ReadableSpan]) -> str:
    parts = []
    for span in spans:
        parts.append(span.name)
        parts.extend(f"{k}={v!r}" for k, v in (span.attributes or {}).items())
        for event in span.events:
            parts.extend(f"{k}={v!r}" for k, v in (event.attributes or {}).items())
    return "\n".join(parts)


async def test_one_trace_from_client_through_facade_and_engine_to_provider(
    traced_factory: Callable[..., Any],
) -> None:
    gateway: Traced = await traced_factory()
    trace_id, client_span_id, traceparent = _traceparent()
    async with gateway.sdk() as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": PROMPT}],
            temperature=0,
            extra_headers={"traceparent": traceparent},
        )
    answer = raw.parse()
    spans = await gateway.spans_when(lambda s: any(x.name == FACADE_CHAT for x in s))
    facade, engine, provider = _one(spans, FACADE_CHAT), _one(spans, ENGINE_COMPLETE), _one(spans, "chat gpt-4o")
    assert {s.context.trace_id for s in (facade, engine, provider)} == {trace_id}, "one trace, the client's"
    assert facade.parent is not None
    assert facade.parent.span_id == client_span_id
    assert _child_of(engine, facade), "the gRPC hop carries the facade span as parent"
    assert _child_of(provider, engine)
    assert (facade.kind, engine.kind, provider.kind) == (SpanKind.SERVER, SpanKind.SERVER, SpanKind.CLIENT)
    line = await gateway.request_line(raw.headers["x-request-id"])
    assert (line["trace_id"], line["span_id"]) == (f"{trace_id:032x}", f"{engine.context.span_id:016x}")

    assert facade.attributes is not None
    assert engine.attributes is not None
    assert provider.attributes is not None
    assert facade.attributes["http.response.status_code"] == 200
    assert facade.attributes["chittycan.request_id"] == raw.headers["x-request-id"]
    usage = answer.usage
    assert usage is not None
    expected_engine = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o",
        "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        "chittycan.cache": "miss",
        "chittycan.request_id": raw.headers["x-request-id"],
        "rpc.grpc.status_code": 0,
    }
    assert {k: engine.attributes.get(k) for k in expected_engine} == expected_engine
    assert engine.attributes["chittycan.cost_usd"] == pytest.approx(float(raw.headers["x-chittycan-cost"]))
    expected_provider = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.provider.name": "openai",
        "gen_ai.response.model": answer.model,
        "gen_ai.response.id": answer.id,
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        "gen_ai.request.temperature": 0.0,
        "gen_ai.response.finish_reasons": ("stop",),
    }
    assert {k: provider.attributes.get(k) for k in expected_provider} == expected_provider
    assert "7f3a9c" not in _text_of(spans), "no prompt or completion text without CHITTYCAN_TRACE_CONTENT"


async def test_cache_hits_and_streams_are_traced(traced_factory: Callable[..., Any]) -> None:
    gateway: Traced = await traced_factory()
    messages: Any = [{"role": "user", "content": PROMPT}]
    async with gateway.sdk() as sdk:
        await sdk.chat.completions.create(model="gpt-4o", messages=messages, temperature=0)
        await gateway.engine.ledger.flush()
        hit = await sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages, temperature=0)
        assert hit.headers["x-chittycan-cache"] == "HIT"
        stream = await sdk.chat.completions.create(
            model="claude-sonnet-4", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    spans = await gateway.spans_when(lambda s: sum(x.name == FACADE_CHAT for x in s) == 3)
    completes = [s for s in spans if s.name == ENGINE_COMPLETE]
    hit_span = next(s for s in completes if s.attributes and s.attributes["chittycan.cache"] == "hit")
    assert hit_span.attributes is not None
    assert hit_span.attributes["chittycan.cost_usd"] == 0.0
    assert isinstance(saved := hit_span.attributes["chittycan.saved_usd"], float)
    assert saved > 0
    assert not [s for s in spans if _child_of(s, hit_span)], "a hit never reaches a provider"

    engine = _one(spans, ENGINE_STREAM)
    provider = _one(spans, "chat claude-sonnet-4-20250514")
    assert _child_of(provider, engine)
    usage = chunks[-1].usage
    assert usage is not None
    assert provider.attributes is not None
    assert engine.attributes is not None
    assert provider.attributes["gen_ai.provider.name"] == "anthropic"
    assert provider.attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert engine.attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert engine.attributes["chittycan.cache"] == "bypass"
    assert "7f3a9c" not in _text_of(spans)


async def test_content_is_recorded_only_when_enabled(traced_factory: Callable[..., Any]) -> None:
    gateway: Traced = await traced_factory(trace_content=True)
    async with gateway.sdk() as sdk:
        answer = await sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": PROMPT}])
    spans = await gateway.spans_when(lambda s: any(x.name == FACADE_CHAT for x in s))
    attributes = _one(spans, "chat gpt-4o").attributes
    assert attributes is not None
    assert PROMPT in str(attributes["gen_ai.input.messages"])
    assert str(answer.choices[0].message.content) in str(attributes["gen_ai.output.messages"])


async def test_a_request_without_traceparent_starts_a_trace_at_the_facade(traced_factory: Callable[..., Any]) -> None:
    gateway: Traced = await traced_factory()
    async with gateway.sdk() as sdk:
        with pytest.raises(openai.NotFoundError):
            await sdk.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    spans = await gateway.spans_when(lambda s: any(x.name == FACADE_CHAT for x in s))
    facade, engine = _one(spans, FACADE_CHAT), _one(spans, ENGINE_COMPLETE)
    assert facade.parent is None
    assert _child_of(engine, facade)
    assert engine.attributes is not None
    assert facade.attributes is not None
    assert engine.attributes["rpc.grpc.status_code"] == 5  # NOT_FOUND
    assert engine.attributes["error.type"] == "MODEL_NOT_FOUND"
    assert facade.attributes["http.response.status_code"] == 404


@dataclass
class _Receiver:
    """An OTLP/HTTP trace receiver: what it was sent, decoded with opentelemetry-proto."""

    requests: list[trace_service_pb2.ExportTraceServiceRequest]
    raw: list[bytes]

    async def handle(self, request: web.Request) -> web.Response:
        assert request.headers["Content-Type"] == "application/x-protobuf"
        body = await request.read()
        self.raw.append(body)
        self.requests.append(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")

    def spans(self) -> Iterator[tuple[str, Any]]:
        """(service.name, span) of everything received."""
        for export in self.requests:
            for resource_spans in export.resource_spans:
                attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        yield attributes["service.name"], span


async def test_gateway_processes_export_one_trace_over_otlp(aiohttp_server: Any, tmp_path: Path) -> None:
    receiver = _Receiver([], [])
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.handle)
    server = await aiohttp_server(app)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": str(server.make_url("")).rstrip("/"), "OTEL_BSP_SCHEDULE_DELAY": "50"}
    gateway = await asyncio.to_thread(start_gateway_processes, tmp_path, extra_env=env)
    try:
        trace_id, client_span_id, traceparent = _traceparent()
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}]}
        headers = {"Authorization": f"Bearer {API_KEY}", "traceparent": traceparent}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers) as resp,
        ):
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
    finally:
        await asyncio.to_thread(gateway.stop)  # a clean shutdown exports what is still batched
    spans = {span.name: (service, span) for service, span in receiver.spans() if span.trace_id == trace_id.to_bytes(16)}
    facade_service, facade = spans[FACADE_CHAT]
    engine_service, engine = spans[ENGINE_COMPLETE]
    provider_service, provider = spans["chat gpt-4o"]
    assert (facade_service, engine_service, provider_service) == ("chittycan-facade", *["chittycan-engine"] * 2)
    assert facade.parent_span_id == client_span_id.to_bytes(8)
    assert engine.parent_span_id == facade.span_id
    assert provider.parent_span_id == engine.span_id
    engine_attributes = {a.key: a.value for a in engine.attributes}
    assert engine_attributes["gen_ai.request.model"].string_value == "gpt-4o"
    assert engine_attributes["gen_ai.provider.name"].string_value == "openai"
    assert engine_attributes["gen_ai.usage.input_tokens"].int_value == answer["usage"]["prompt_tokens"]
    assert engine_attributes["gen_ai.usage.output_tokens"].int_value == answer["usage"]["completion_tokens"]
    assert engine_attributes["chittycan.cache"].string_value in {"miss", "bypass"}
    assert "chittycan.cost_usd" in engine_attributes
    provider_attributes = {a.key: a.value for a in provider.attributes}
    assert provider_attributes["gen_ai.response.model"].string_value == answer["model"]
    assert all(b"7f3a9c" not in raw for raw in receiver.raw), "no prompt or completion text on the wire"


def test_metrics_count_a_scripted_workload(stack_factory: Callable[..., Stack]) -> None:
    dollar_a_call = {"budget-model": {"input": 0.0, "cached_input": 0.0, "output": 250_000.0}}
    stack = stack_factory(
        tenancy={"default_tenant": "team", "default_monthly_usd": 2.0},
        prices=dollar_a_call,
        routes=[{"model": "budget-model", "provider": "openai", "upstream_model": "budget-model"}],
    )
    stack.call(lambda: stack.upstream.script(model="gpt-4o-mini", status=500, times=2))
    costs: list[float] = []
    tokens = [0, 0]
    with openai.OpenAI(api_key=API_KEY, base_url=stack.base_url, max_retries=0) as sdk:
        for text in ("a", "b", "c", "a", "b"):  # three misses, then two hits
            raw = sdk.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": text}], temperature=0
            )
            usage = raw.parse().usage
            assert usage is not None
            tokens[0] += usage.prompt_tokens
            tokens[1] += usage.completion_tokens
            costs.append(float(raw.headers["x-chittycan-cost"]))
            stack.flush()
        stream = sdk.chat.completions.create(
            model="claude-sonnet-4", messages=[{"role": "user", "content": "s"}], stream=True, temperature=0.5
        )
        assert list(stream)
        sdk.embeddings.create(model="text-embedding-3-small", input="e")
        with pytest.raises(openai.NotFoundError):
            sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "n"}])
        with pytest.raises(openai.APIStatusError) as upstream_failure:
            sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "u"}])
        answered = refused = 0
        while not refused:
            try:
                sdk.chat.completions.create(model="budget-model", messages=[{"role": "user", "content": "hi"}])
                answered += 1
            except openai.RateLimitError:
                refused += 1
    stack.flush()
    response = rawhttp.get(f"{stack.root_url}/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = parse_samples(response.text)

    def requests(model: str, provider: str, status: str, cache: str) -> float:
        return sample_value(
            samples, "chittycan_requests_total", model=model, provider=provider, status=status, cache=cache
        )

    assert requests("gpt-4o", "openai", "200", "miss") == 3
    assert requests("gpt-4o", "openai", "200", "hit") == 2
    assert requests("claude-sonnet-4", "anthropic", "200", "bypass") == 1
    assert requests("text-embedding-3-small", "openai", "200", "miss") == 1
    assert requests("nope", "", "404", "none") == 1
    assert requests("gpt-4o-mini", "", str(upstream_failure.value.status_code), "none") == 1
    assert requests("budget-model", "openai", "200", "bypass") == answered
    assert requests("budget-model", "", "429", "none") == refused
    total = sum(v for (name, _), v in samples.items() if name == "chittycan_requests_total")
    assert total == 5 + 1 + 1 + 1 + 1 + answered + refused
    assert sample_value(samples, "chittycan_upstream_errors_total", model="gpt-4o-mini", reason="UPSTREAM_ERROR") == 1
    assert sample_value(samples, "chittycan_budget_refusals_total", model="budget-model") == refused
    gpt = {"model": "gpt-4o", "provider": "openai"}
    input_tokens = sum(
        sample_value(samples, "chittycan_tokens_total", cache=c, type="input", **gpt) for c in ("miss", "hit")
    )
    output_tokens = sum(
        sample_value(samples, "chittycan_tokens_total", cache=c, type="output", **gpt) for c in ("miss", "hit")
    )
    assert [input_tokens, output_tokens] == tokens
    assert sample_value(samples, "chittycan_cost_usd_total", **gpt) == pytest.approx(sum(costs))
    assert sample_value(samples, "chittycan_saved_usd_total", **gpt) == pytest.approx(costs[0] + costs[1])
    duration = "chittycan_request_duration_seconds_count"
    assert sample_value(samples, duration, cache="miss", **gpt) == 3
    assert sample_value(samples, duration, cache="hit", **gpt) == 2
    ttft = "chittycan_time_to_first_token_seconds_count"
    assert sample_value(samples, ttft, model="claude-sonnet-4", provider="anthropic") == 1
    assert sample_value(samples, "chittycan_requests_in_flight") == 0


def test_in_flight_gauge_counts_open_calls(stack: Stack, client: openai.OpenAI) -> None:
    stack.call(lambda: stack.upstream.script(hang_after_chunks=1))
    with client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "wait"}], stream=True
    ) as stream:
        next(iter(stream))
        samples = parse_samples(rawhttp.get(f"{stack.root_url}/metrics").text)
        assert sample_value(samples, "chittycan_requests_in_flight") == 1


def test_watch_usage_streams_records_filtered_by_model(stack: Stack) -> None:
    async def scenario() -> list[usage_pb2.UsageRecord]:
        async with UsageClient(f"127.0.0.1:{stack.engine.port}", master_key=_master_key(stack)) as usage:
            watch = usage.watch(model="gpt-4o-mini")
            await watch.ready()
            headers = {"Authorization": f"Bearer {API_KEY}"}
            async with aiohttp.ClientSession(headers=headers) as session:
                for model in ("gpt-4o", "gpt-4o-mini", "gpt-4o", "gpt-4o-mini"):
                    body = {"model": model, "messages": [{"role": "user", "content": model}]}
                    async with session.post(f"{stack.base_url}/chat/completions", json=body) as resp:
                        assert resp.status == 200
            records = []
            async for record in watch:
                records.append(record)
                if len(records) == 2:
                    watch.cancel()
            return records

    records = stack.run(scenario())
    assert [r.requested_model for r in records] == ["gpt-4o-mini", "gpt-4o-mini"]
    stack.flush()
    ledger = stack.call(lambda: [r for r in stack.engine.ledger.read() if r.requested_model == "gpt-4o-mini"])
    assert [r.request_id for r in records] == [r.request_id for r in ledger]


def _master_key(stack: Stack) -> str | None:
    return read_master_key(stack.settings.tenancy.master_key, stack.settings.data_dir)


def test_usage_records_and_dashboards_need_the_master_key(stack: Stack) -> None:
    """They name tenants, token ids and spend. Without the key, or with a wrong one, both are refused as
    UNAUTHENTICATED; the metrics (aggregates, as `GET /metrics` serves them) need no key."""
    since = timestamp_pb2.Timestamp(seconds=1)

    async def scenario() -> list[str]:
        refused = []
        for key in (None, "chittycan_master_wrong"):
            async with UsageClient(f"127.0.0.1:{stack.engine.port}", master_key=key) as usage:
                watch = usage.watch()
                with pytest.raises(AuthenticationError) as caught:
                    await watch.ready()
                refused.append(caught.value.message)
                with pytest.raises(AuthenticationError) as caught:
                    await usage.dashboard(since)
                refused.append(caught.value.message)
                assert "chittycan_requests_total" in (await usage.metrics()).text
        async with UsageClient(f"127.0.0.1:{stack.engine.port}", master_key=_master_key(stack)) as usage:
            await usage.dashboard(since)  # the right key: answered
        return refused

    assert stack.run(scenario()) == ["Usage records need the master key.", "Dashboards need the master key."] * 2
