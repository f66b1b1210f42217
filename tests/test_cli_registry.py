"""`can registry metrics show` as a subprocess against real gateway processes: every figure equals the ledger,
across a restart, in the box form, as JSON and live with --watch; plus the engine's JSON request log."""

import math
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from chittycan.v1 import usage_pb2
from engine.ledger import UsageLedger
from engine.store import Store, StoreWriter
from tests.processes import GatewayProcesses, start_gateway_processes
from tests.stack import API_KEY

CAN = str(Path(sys.executable).with_name("can"))
HIT = usage_pb2.CACHE_STATUS_HIT
UNCACHED = (usage_pb2.CACHE_STATUS_MISS, usage_pb2.CACHE_STATUS_BYPASS)


def _workload(base_url: str) -> None:
    """Misses, at least one hit, several models and providers, embeddings and an error."""
    with openai.OpenAI(api_key=API_KEY, base_url=base_url, max_retries=0) as sdk:

        def ask(model: str, text: str) -> str:
            raw = sdk.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": text}], temperature=0
            )
            return raw.headers["x-chittycan-cache"]

        assert ask("gpt-4o", "one") == "MISS"
        ask("gpt-4o", "two")
        # The cache entry is committed off the request path; ask again until it is served from the cache.
        assert any(ask("gpt-4o", "one") == "HIT" for _ in range(200)), "no cache hit"
        ask("claude-sonnet-4", "three")
        ask("llama-3-70b", "four")
        sdk.embeddings.create(model="text-embedding-3-small", input="five")
        with pytest.raises(openai.NotFoundError):
            sdk.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "six"}])


def _ledger(data_dir: Path) -> list[usage_pb2.UsageRecord]:
    store = Store(data_dir)
    try:
        return list(UsageLedger(store, StoreWriter(store)).read())
    finally:
        store.close()


def _can(gateway: GatewayProcesses, *args: str) -> str:
    done = subprocess.run(
        [CAN, "registry", "metrics", "show", *args], env=gateway.env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _percentile(latencies: list[int], percent: int) -> int:
    ordered = sorted(latencies)
    return ordered[math.ceil(percent * len(ordered) / 100) - 1]


def _expected(records: list[usage_pb2.UsageRecord]) -> dict[str, Any]:
    """The dashboard's figures, computed here from the ledger's records."""
    hits = [r for r in records if r.cache == HIT]
    uncached = [r for r in records if r.cache in UNCACHED]
    answered = [r.latency_micros for r in records if r.http_status < 400]
    month = datetime.now(UTC).strftime("%Y-%m")
    month_saved = sum(
        r.saved_micros for r in hits if datetime.fromtimestamp(r.time.seconds, UTC).strftime("%Y-%m") == month
    )
    models = sorted(Counter(r.requested_model for r in records).items(), key=lambda item: (-item[1], item[0]))
    return {
        "total_requests": len(records),
        "cache_hits": len(hits),
        "uncached_requests": len(uncached),
        "errors": sum(r.http_status >= 400 for r in records),
        "total_cost_micros": sum(r.cost_micros for r in records),
        "uncached_cost_micros": sum(r.cost_micros for r in uncached),
        "cached_cost_micros": sum(r.cost_micros for r in hits),
        "latency_micros": {p: _percentile(answered, p) for p in (50, 95, 99)},
        "samples": len(answered),
        "models": models,
        "cost_saved_micros": sum(r.saved_micros for r in hits),
        "month_cost_saved_micros": month_saved,
        "tokens": {
            "prompt": sum(r.prompt_tokens for r in records),
            "completion": sum(r.completion_tokens for r in records),
        },
    }


def _usd(micros: float, places: int) -> str:
    amount = micros / 1e6
    if micros and round(amount, places) == 0:
        return f"${amount:.{1 - math.floor(math.log10(amount))}f}"
    return f"${amount:,.{places}f}"


def _ms(micros: int) -> str:
    return f"{micros / 1000:.1f}ms" if micros < 10_000 else f"{micros / 1000:,.0f}ms"


def _box(e: dict[str, Any]) -> str:
    """The playbook's layout, filled with the expected figures."""
    total = e["total_requests"]
    rows = [
        "ChittyCan Proxy Metrics (Last 24h)",
        None,
        f"Total Requests:        {total:,}",
        f"Cache Hit Rate:        {100 * e['cache_hits'] / total:.1f}%",
        f"Total Cost:            {_usd(e['total_cost_micros'], 2)}",
        f"Cost per Request:      {_usd(e['total_cost_micros'] / total, 3)} avg",
        f"                       {_usd(e['uncached_cost_micros'] / e['uncached_requests'], 3)} uncached",
        f"                       {_usd(e['cached_cost_micros'] / e['cache_hits'], 3)} cached",
        None,
        "Latency:",
        *(f"  P{p}:  {_ms(e['latency_micros'][p])}" for p in (50, 95, 99)),
        None,
        "Model Distribution:",
        *(f"  {m + ':':<20} {100 * n / total:.0f}% ({n} request{'' if n == 1 else 's'})" for m, n in e["models"]),
    ]
    lines = ["┌" + "─" * 53 + "┐"]
    lines += ["├" + "─" * 53 + "┤" if row is None else f"│ {row:<52}│" for row in rows]
    lines += [
        "└" + "─" * 53 + "┘",
        "",
        f"Cost Savings: {_usd(e['month_cost_saved_micros'], 2)} this month (cache hits)",
    ]
    return "\n".join(lines) + "\n"


def test_dashboard_equals_the_ledger_across_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "gateway"
    with start_gateway_processes(data_dir) as gateway:
        _workload(gateway.base_url)
    records = _ledger(data_dir)  # the engine flushed on its clean stop
    request_lines = [orjson.loads(line) for line in (data_dir / "logs" / "engine.out").read_text().splitlines()]
    expected = _expected(records)
    assert expected["cache_hits"] >= 1
    assert expected["uncached_requests"] >= 5
    assert len(expected["models"]) == 5

    with start_gateway_processes(data_dir) as gateway:
        figures = orjson.loads(_can(gateway, "--json"))
        box = _can(gateway)

    assert {k: figures[k] for k in ("total_requests", "cache_hits", "uncached_requests", "errors")} == {
        k: expected[k] for k in ("total_requests", "cache_hits", "uncached_requests", "errors")
    }
    assert figures["total_cost_micros"] == expected["total_cost_micros"]
    assert figures["cache_hit_rate"] == expected["cache_hits"] / expected["total_requests"]
    assert figures["cost_per_request_usd"] == {
        "avg": expected["total_cost_micros"] / expected["total_requests"] / 1e6,
        "uncached": expected["uncached_cost_micros"] / expected["uncached_requests"] / 1e6,
        "cached": expected["cached_cost_micros"] / expected["cache_hits"] / 1e6,
    }
    latency = figures["latency_ms"]
    assert [latency["p50"], latency["p95"], latency["p99"]] == [
        expected["latency_micros"][p] / 1000 for p in (50, 95, 99)
    ]
    assert latency["samples"] == expected["samples"]
    assert latency["method"].startswith("exact")
    assert [(m["model"], m["requests"]) for m in figures["models"]] == expected["models"]
    assert figures["cost_saved_micros"] == expected["cost_saved_micros"] > 0
    assert figures["month_cost_saved_micros"] == expected["month_cost_saved_micros"]
    assert figures["tokens"] == expected["tokens"]
    assert figures["window"]["label"] == "24h"

    assert box == _box(expected)
    assert {len(line) for line in box.splitlines()[:-2]} == {55}, "the playbook's box is 55 columns wide"

    assert sorted(line["request_id"] for line in request_lines) == sorted(r.request_id for r in records)
    assert all(API_KEY[:12] not in str(line) for line in request_lines), "secrets never reach the request log"
    by_id = {line["request_id"]: line for line in request_lines}
    for record in records:
        line = by_id[record.request_id]
        assert (line["status"], line["model"], line["latency_ms"]) == (
            record.http_status,
            record.requested_model,
            record.latency_micros / 1000,
        )


def test_watch_redraws_as_usage_arrives(tmp_path: Path) -> None:
    with start_gateway_processes(tmp_path / "gateway") as gateway:
        watcher = subprocess.Popen(
            [CAN, "registry", "metrics", "show", "--watch", "--json"],
            env={**gateway.env, "PYTHONFAULTHANDLER": "1"},  # SIGABRT dumps every thread's stack, for the report
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert watcher.stdout is not None
            assert orjson.loads(watcher.stdout.readline())["total_requests"] == 0
            with openai.OpenAI(api_key=API_KEY, base_url=gateway.base_url, max_retries=0) as sdk:
                sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "w"}])
            figures = orjson.loads(watcher.stdout.readline())
            assert figures["total_requests"] == 1
            assert [m["model"] for m in figures["models"]] == ["gpt-4o-mini"]
        finally:
            watcher.send_signal(signal.SIGINT)
            try:
                _, stderr = watcher.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                watcher.send_signal(signal.SIGABRT)
                pytest.fail(f"the watcher ignored Ctrl-C; its threads:\n{watcher.communicate()[1][-6000:]}")
        assert watcher.returncode == 0, stderr
