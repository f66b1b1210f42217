"""Response cache and cost headers, seen through the official SDK's raw responses."""

import time

import openai
import pytest

from chittycan.v1 import usage_pb2
from tests import rawhttp
from tests.stack import API_KEY, Stack

PROMPT = [{"role": "user", "content": "Return the string OK."}]


def _create(client: openai.OpenAI, **kwargs: object) -> tuple[dict[str, str], openai.types.chat.ChatCompletion]:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=PROMPT, **kwargs)  # type: ignore[call-overload]
    return dict(raw.headers), raw.parse()


def test_deterministic_call_is_cached_and_hit_costs_zero(client: openai.OpenAI, stack: Stack) -> None:
    headers, first = _create(client, temperature=0)
    assert headers["x-chittycan-cache"] == "MISS"
    assert headers["cache-status"] == "ChittyCan; fwd=miss"
    assert float(headers["x-chittycan-cost"]) > 0
    assert headers["x-chittycan-model"] == "gpt-4o"
    assert float(headers["x-chittycan-overhead-ms"]) >= 0
    stack.flush()
    headers, second = _create(client, temperature=0)
    assert headers["x-chittycan-cache"] == "HIT"
    assert headers["cache-status"] == "ChittyCan; hit"
    assert headers["x-chittycan-cost"] == "0.000000"
    assert int(headers["age"]) >= 0
    assert second.model_dump() == first.model_dump(), "a hit returns the original answer and usage"
    assert len(stack.upstream_requests("/v1/chat/completions")) == 1, "the hit never reached the upstream"


def test_overhead_header_is_the_gateways_time_without_the_upstream_wait(client: openai.OpenAI, stack: Stack) -> None:
    stack.call(lambda: stack.upstream.script(delay=0.3))
    started = time.perf_counter()
    headers, _ = _create(client, temperature=0)
    total_ms = (time.perf_counter() - started) * 1000
    assert total_ms >= 300
    assert 0 < float(headers["x-chittycan-overhead-ms"]) < total_ms - 250, "the 300 ms upstream wait is excluded"
    stack.flush()
    started = time.perf_counter()
    headers, _ = _create(client, temperature=0)
    total_ms = (time.perf_counter() - started) * 1000
    assert headers["x-chittycan-cache"] == "HIT"
    assert 0 < float(headers["x-chittycan-overhead-ms"]) <= total_ms, "a hit is all gateway time"


def test_non_deterministic_call_bypasses(client: openai.OpenAI, stack: Stack) -> None:
    headers, _ = _create(client, temperature=0.7)
    assert headers["x-chittycan-cache"] == "BYPASS"
    stack.flush()
    headers, _ = _create(client, temperature=0.7)
    assert headers["x-chittycan-cache"] == "BYPASS"
    assert len(stack.upstream_requests("/v1/chat/completions")) == 2


def test_seed_makes_a_call_cacheable(client: openai.OpenAI, stack: Stack) -> None:
    _create(client, seed=42)
    stack.flush()
    assert _create(client, seed=42)[0]["x-chittycan-cache"] == "HIT"
    assert _create(client, seed=43)[0]["x-chittycan-cache"] == "MISS"


def test_labels_do_not_change_the_key_but_parameters_do(client: openai.OpenAI, stack: Stack) -> None:
    _create(client, temperature=0, user="alice", metadata={"a": "1"})
    stack.flush()
    assert _create(client, temperature=0, user="bob")[0]["x-chittycan-cache"] == "HIT"
    assert _create(client, temperature=0, max_tokens=5)[0]["x-chittycan-cache"] == "MISS"
    assert _create(client, temperature=0, top_p=0.5)[0]["x-chittycan-cache"] == "MISS"


def test_json_key_order_and_float_spelling_do_not_change_the_key(stack: Stack) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    url = f"{stack.base_url}/chat/completions"
    schema = b'{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}}}'
    first = (
        b'{"model":"gpt-4o","temperature":0.0,"messages":[{"role":"user","content":"hi"}],'
        b'"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":' + schema + b"}}}"
    )
    second = (b'{"response_format":{"json_schema":{"schema":{"properties":{"b":{"type":"number"},"a":{"type":'
              b'"string"}},"type":"object"},"name":"x"},"type":"json_schema"},"messages":[{"content":"hi","role":'
              b'"user"}],"temperature":0,"model":"gpt-4o"}')  # fmt: skip
    assert rawhttp.post(url, content=first, headers=auth).headers["x-chittycan-cache"] == "MISS"
    stack.flush()
    assert rawhttp.post(url, content=second, headers=auth).headers["x-chittycan-cache"] == "HIT"


def test_cache_control_no_cache_and_no_store(client: openai.OpenAI, stack: Stack) -> None:
    _create(client, temperature=0)
    stack.flush()
    headers, _ = _create(client, temperature=0, extra_headers={"Cache-Control": "no-cache"})
    assert headers["x-chittycan-cache"] == "BYPASS"
    headers, _ = _create(client, temperature=0, extra_headers={"Cache-Control": "no-store"})
    assert headers["x-chittycan-cache"] == "BYPASS"
    assert len(stack.upstream_requests("/v1/chat/completions")) == 3
    stack.flush()
    assert _create(client, temperature=0)[0]["x-chittycan-cache"] == "HIT"


def test_no_store_never_writes(client: openai.OpenAI, stack: Stack) -> None:
    _create(client, temperature=0, extra_headers={"Cache-Control": "no-store"})
    stack.flush()
    assert _create(client, temperature=0)[0]["x-chittycan-cache"] == "MISS"


def test_tenants_are_isolated(stack: Stack) -> None:
    with (
        openai.OpenAI(api_key="sk-tenant-a", base_url=stack.base_url, max_retries=0) as a,
        openai.OpenAI(api_key="sk-tenant-b", base_url=stack.base_url, max_retries=0) as b,
    ):
        _create(a, temperature=0)
        stack.flush()
        assert _create(b, temperature=0)[0]["x-chittycan-cache"] == "MISS"
        assert _create(a, temperature=0)[0]["x-chittycan-cache"] == "HIT"


def test_shared_namespace_is_opt_in(stack_factory: object) -> None:
    stack = stack_factory(cache={"namespace": "shared"})  # type: ignore[operator]
    with (
        openai.OpenAI(api_key="sk-tenant-a", base_url=stack.base_url, max_retries=0) as a,
        openai.OpenAI(api_key="sk-tenant-b", base_url=stack.base_url, max_retries=0) as b,
    ):
        _create(a, temperature=0)
        stack.flush()
        assert _create(b, temperature=0)[0]["x-chittycan-cache"] == "HIT"


def test_stream_after_non_stream_and_back_give_identical_content(client: openai.OpenAI, stack: Stack) -> None:
    _, whole = _create(client, temperature=0)
    stack.flush()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=PROMPT, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["x-chittycan-cache"] == "HIT"
    chunks = list(raw.parse())
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage == whole.usage

    other = [{"role": "user", "content": "Stream me first"}]
    streamed = client.chat.completions.create(model="gpt-4o", messages=other, temperature=0, stream=True)
    content = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    stack.flush()
    raw_json = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=other, temperature=0)
    assert raw_json.headers["x-chittycan-cache"] == "HIT"
    assert raw_json.parse().choices[0].message.content == content
    assert len(stack.upstream_requests("/v1/chat/completions")) == 2


def test_stream_hit_replay_is_well_framed(stack: Stack) -> None:
    body = {"model": "gpt-4o", "messages": PROMPT, "temperature": 0, "stream": True}
    auth = {"Authorization": f"Bearer {API_KEY}"}
    first = rawhttp.post(f"{stack.base_url}/chat/completions", json=body, headers=auth)
    assert first.headers["x-chittycan-cache"] == "MISS"
    assert "x-chittycan-cost" not in first.headers, "a stream's cost follows in the stream"
    assert b"\n\n: x-chittycan-cost 0.0" in first.content
    stack.flush()
    second = rawhttp.post(f"{stack.base_url}/chat/completions", json=body, headers=auth)
    assert second.headers["x-chittycan-cache"] == "HIT"
    assert second.headers["x-chittycan-cost"] == "0.000000"
    assert second.content.endswith(b": x-chittycan-cost 0.000000\n\ndata: [DONE]\n\n")
    assert b'"usage"' not in second.content


def test_cut_stream_is_not_cached(client: openai.OpenAI, stack: Stack) -> None:
    stack.call(lambda: stack.upstream.script(fail_after_chunks=2))
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="gpt-4o", messages=PROMPT, temperature=0, stream=True))
    stack.flush()
    assert _create(client, temperature=0)[0]["x-chittycan-cache"] == "MISS"


def test_errors_are_not_cached(client: openai.OpenAI, stack: Stack) -> None:
    stack.call(lambda: stack.upstream.script(status=400))
    with pytest.raises(openai.BadRequestError):
        _create(client, temperature=0)
    stack.flush()
    assert _create(client, temperature=0)[0]["x-chittycan-cache"] == "MISS"


def test_embeddings_are_cached(client: openai.OpenAI, stack: Stack) -> None:
    def embed() -> object:
        return client.embeddings.with_raw_response.create(
            model="text-embedding-3-small", input="hi", dimensions=8, encoding_format="float"
        )

    first = embed()
    assert first.headers["x-chittycan-cache"] == "MISS"
    stack.flush()
    second = embed()
    assert second.headers["x-chittycan-cache"] == "HIT"
    assert second.parse().data[0].embedding == first.parse().data[0].embedding
    base64 = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="hi", dimensions=8, encoding_format="base64"
    )
    assert base64.headers["x-chittycan-cache"] == "MISS", "the encoding is part of the key"


def test_unknown_price_says_unknown(stack_factory: object) -> None:
    stack = stack_factory(routes=[{"model": "mystery", "provider": "openai", "upstream_model": "mystery-1"}])  # type: ignore[operator]
    with openai.OpenAI(api_key=API_KEY, base_url=stack.base_url, max_retries=0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(model="mystery", messages=PROMPT)
    assert raw.headers["x-chittycan-cost"] == "unknown"
    stack.flush()
    record = list(stack.engine.ledger.read())[-1]
    assert not record.cost_known
    metrics = rawhttp.get(f"{stack.root_url}/metrics").text
    assert 'chittycan_unpriced_requests_total{model="mystery",provider="openai"} 1.0' in metrics


def test_cache_off_mode(stack_factory: object) -> None:
    stack = stack_factory(cache={"mode": "off"})  # type: ignore[operator]
    with openai.OpenAI(api_key=API_KEY, base_url=stack.base_url, max_retries=0) as sdk:
        assert _create(sdk, temperature=0)[0]["x-chittycan-cache"] == "BYPASS"


def test_cache_survives_an_engine_restart(stack_factory: object, tmp_path: object) -> None:
    data_dir = tmp_path / "shared"  # type: ignore[operator]
    first = stack_factory(data_dir=data_dir)  # type: ignore[operator]
    with openai.OpenAI(api_key=API_KEY, base_url=first.base_url, max_retries=0) as sdk:
        _create(sdk, temperature=0)
    stack_factory.thread.stop_stack(first)  # type: ignore[attr-defined]
    second = stack_factory(data_dir=data_dir)  # type: ignore[operator]
    with openai.OpenAI(api_key=API_KEY, base_url=second.base_url, max_retries=0) as sdk:
        assert _create(sdk, temperature=0)[0]["x-chittycan-cache"] == "HIT"


def test_ledger_records_hits_and_misses(client: openai.OpenAI, stack: Stack) -> None:
    _create(client, temperature=0)
    stack.flush()
    _create(client, temperature=0)
    stack.flush()
    miss, hit = list(stack.engine.ledger.read())[-2:]
    assert miss.cache == usage_pb2.CACHE_STATUS_MISS
    assert hit.cache == usage_pb2.CACHE_STATUS_HIT
    assert miss.cost_micros > 0
    assert hit.cost_micros == 0
    assert hit.saved_micros == miss.cost_micros
    assert hit.prompt_tokens == miss.prompt_tokens
    assert miss.provider == "openai"
    assert miss.routed_model == "gpt-4o"
    assert miss.http_status == 200


def test_thousand_identical_calls_hit_999_times(client: openai.OpenAI, stack: Stack) -> None:
    statuses = [_create(client, temperature=0)[0]["x-chittycan-cache"]]
    stack.flush()
    statuses += [_create(client, temperature=0)[0]["x-chittycan-cache"] for _ in range(999)]
    assert statuses.count("HIT") >= 999
    assert len(stack.upstream_requests("/v1/chat/completions")) == 1


def test_the_next_call_hits_even_before_the_entry_is_committed(client: openai.OpenAI, stack: Stack) -> None:
    # Hold LMDB's write lock so that the engine's batched write cannot commit while the two calls run.
    blocker = stack.engine._store.env.begin(write=True)
    try:
        statuses = [
            client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": "back to back"}], temperature=0
            ).headers["x-chittycan-cache"]
            for _ in range(2)
        ]
    finally:
        blocker.abort()
    assert statuses == ["MISS", "HIT"]
