"""ResponseCache on a real LMDB store: expiry, size-bounded eviction, keys, and the batched writer."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chittycan.v1 import cache_pb2, completion_pb2, gateway_pb2
from engine.cache import CachePolicy, ResponseCache, chat_cache_key
from engine.routing import Route
from engine.store import Store, StoreWriter

ROUTE = Route("gpt-4o", "openai", "gpt-4o", 1, 1, 1)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[tuple[Store, StoreWriter]]:
    store = Store(tmp_path, map_size=64 << 20)
    writer = StoreWriter(store)
    writer.start()
    yield store, writer
    await writer.close()
    store.close()


def _entry(text: str) -> cache_pb2.CacheEntry:
    response = completion_pb2.ChatResponse(id="chatcmpl-1", model="gpt-4o")
    response.choices.add().message.text = text
    return cache_pb2.CacheEntry(chat=response, model="gpt-4o", provider="openai", cost_micros=42)


async def test_entries_expire_after_ttl(store: tuple[Store, StoreWriter]) -> None:
    clock = Clock()
    cache = ResponseCache(*store, ttl_seconds=60, max_bytes=1 << 20, clock=clock)
    cache.put(b"k", _entry("hello"))
    await cache.flush()
    entry = cache.get(b"k")
    assert entry is not None
    assert entry.chat.choices[0].message.text == "hello"
    clock.now += 61
    assert cache.get(b"k") is None


async def test_size_bound_evicts_oldest_first(store: tuple[Store, StoreWriter]) -> None:
    clock = Clock()
    stamped = _entry("x" * 1000)
    stamped.created_unix, stamped.expires_unix = 1_000_001, 1_003_601
    size = len(stamped.SerializeToString()) + 32
    cache = ResponseCache(*store, ttl_seconds=3600, max_bytes=size * 3, clock=clock)
    for i in range(5):
        clock.now += 1
        cache.put(f"key-{i:02d}-padding-to-32-bytes!!".encode(), _entry("x" * 1000))
    await cache.flush()
    present = [i for i in range(5) if cache.get(f"key-{i:02d}-padding-to-32-bytes!!".encode())]
    assert present == [2, 3, 4]
    entries, total = cache.stats()
    assert entries == 3
    assert total <= size * 3


async def test_rewriting_a_key_keeps_the_byte_total_exact(store: tuple[Store, StoreWriter]) -> None:
    cache = ResponseCache(*store, ttl_seconds=3600, max_bytes=1 << 20, clock=Clock())
    for _ in range(3):
        cache.put(b"same", _entry("abc"))
    await cache.flush()
    assert cache.stats() == (1, len(b"same") + len(cache_pb2.CacheEntry.SerializeToString(cache.get(b"same"))))  # type: ignore[arg-type]


def _request(**fields: object) -> completion_pb2.ChatRequest:
    request = completion_pb2.ChatRequest(model="gpt-4o", **fields)  # type: ignore[arg-type]
    request.messages.add(role=completion_pb2.ROLE_USER, text="hi")
    return request


def test_key_ignores_labels_and_model_alias_but_not_parameters() -> None:
    base = chat_cache_key("t", ROUTE, _request(temperature=0))
    assert chat_cache_key("t", ROUTE, _request(temperature=0, user="u", stream=True)) == base
    assert chat_cache_key("t", ROUTE, _request(temperature=0, metadata={"a": "b"})) == base
    assert chat_cache_key("other-tenant", ROUTE, _request(temperature=0)) != base
    assert chat_cache_key("t", ROUTE, _request(temperature=0, seed=1)) != base
    assert chat_cache_key("t", ROUTE, _request(temperature=0, stop=["x"])) != base
    other_route = Route("gpt-4o", "openai", "gpt-4o-mini", 1, 1, 1)
    assert chat_cache_key("t", other_route, _request(temperature=0)) != base


def test_key_ignores_json_key_order_in_schemas() -> None:
    first = _request(temperature=0)
    first.tools.add(name="f", parameters_json=b'{"a":1,"b":2}')
    second = _request(temperature=0)
    second.tools.add(name="f", parameters_json=b'{"b":2,"a":1}')
    assert chat_cache_key("t", ROUTE, first) == chat_cache_key("t", ROUTE, second)


@pytest.mark.parametrize(
    ("mode", "fields", "cache_mode", "expected"),
    [
        ("deterministic", {"temperature": 0}, gateway_pb2.CACHE_MODE_UNSPECIFIED, (True, True)),
        ("deterministic", {"seed": 3}, gateway_pb2.CACHE_MODE_UNSPECIFIED, (True, True)),
        ("deterministic", {}, gateway_pb2.CACHE_MODE_UNSPECIFIED, (False, False)),
        ("deterministic", {"temperature": 0, "n": 2}, gateway_pb2.CACHE_MODE_UNSPECIFIED, (False, False)),
        ("all", {"temperature": 1}, gateway_pb2.CACHE_MODE_UNSPECIFIED, (True, True)),
        ("off", {"temperature": 0}, gateway_pb2.CACHE_MODE_UNSPECIFIED, (False, False)),
        ("all", {}, gateway_pb2.CACHE_MODE_NO_CACHE, (False, True)),
        ("all", {}, gateway_pb2.CACHE_MODE_NO_STORE, (False, False)),
    ],
)
def test_policy(mode: str, fields: dict[str, object], cache_mode: int, expected: tuple[bool, bool]) -> None:
    decision = CachePolicy(mode).for_chat(_request(**fields), gateway_pb2.CallOptions(cache_mode=cache_mode))  # type: ignore[arg-type]
    assert (decision.lookup, decision.store) == expected
