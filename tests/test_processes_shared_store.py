"""Real processes: two engines share one LMDB store (cache and ledger); keys never reach disk or logs."""

import asyncio
from pathlib import Path

import openai
import orjson

from chittycan.v1 import completion_pb2
from clients.admin import read_master_key
from clients.gateway import GatewayClient
from clients.usage import UsageClient
from engine.ledger import UsageLedger
from engine.store import Store, StoreWriter
from tests.processes import start_gateway_processes

SECRET = "sk-passthrough-must-not-be-logged-7781"


def _request() -> completion_pb2.ChatRequest:
    request = completion_pb2.ChatRequest(model="gpt-4o", temperature=0)
    request.messages.add(role=completion_pb2.ROLE_USER, text="shared cache please")
    return request


async def _ask_engine(addr: str) -> str:
    async with GatewayClient(addr) as client:
        answer = await client.complete(_request(), api_key=SECRET)
    return {1: "HIT", 2: "MISS", 3: "BYPASS"}[answer.meta.cache]


def test_two_engines_share_the_cache_and_ledger(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with start_gateway_processes(data_dir, engines=2) as gateway:
        first, second = gateway.engine_addrs
        assert asyncio.run(_ask_engine(first)) == "MISS"
        deadline = 50
        status = asyncio.run(_ask_engine(second))
        while status != "HIT" and deadline:  # the first engine commits its entry off the request path
            deadline -= 1
            status = asyncio.run(_ask_engine(second))
        assert status == "HIT", "the second engine process reads the first one's cache entry"
        with openai.OpenAI(api_key=SECRET, base_url=gateway.base_url, max_retries=0) as sdk:
            sdk.embeddings.create(model="text-embedding-3-small", input="x", dimensions=8)
        logs = list((data_dir / "logs").iterdir())
        assert logs, "the processes write their logs under the data directory"
    # Clean shutdown flushed every usage record of both engines into the one ledger.
    store = Store(data_dir)
    records = list(UsageLedger(store, StoreWriter(store)).read())
    store.close()
    assert len(records) >= 3
    assert {r.routed_model for r in records} >= {"gpt-4o", "text-embedding-3-small"}
    for path in [*(data_dir / "store").iterdir(), *logs]:
        assert SECRET.encode() not in path.read_bytes(), path
    # The engines wrote one request line per ledger record to stdout, all of them by the clean shutdown.
    lines = [
        orjson.loads(line)
        for path in logs
        if path.name.startswith("engine") and path.suffix == ".out"
        for line in path.read_bytes().splitlines()
    ]
    assert sorted(line["request_id"] for line in lines) == sorted(r.request_id for r in records)


async def _watch_then_ask(watch_addr: str, ask_addr: str, master_key: str | None) -> list[str]:
    async with UsageClient(watch_addr, master_key=master_key) as usage:
        watch = usage.watch(model="gpt-4o")
        await watch.ready()
        await _ask_engine(ask_addr)
        records = watch.__aiter__()
        first = await asyncio.wait_for(anext(records), 10)
        watch.cancel()
    return [first.requested_model, first.request_id]


def test_watch_usage_sees_every_engine_process(tmp_path: Path) -> None:
    with start_gateway_processes(tmp_path / "data", engines=2) as gateway:
        first, second = gateway.engine_addrs
        key = read_master_key("", tmp_path / "data")
        model, request_id = asyncio.run(_watch_then_ask(second, first, key))
    assert model == "gpt-4o"
    assert request_id
