"""`python -m bench.soak`: mixed load through the gateway for minutes, RSS of each process sampled throughout.

The mix rotates non-stream misses, cache hits, streams, embeddings and fresh cacheable requests (each one a new
key, so the cache and the ledger keep growing as they would in service). Memory is read from /proc: VmRSS, and
RssAnon (the heap; LMDB's memory map shows up in RssFile instead, so a growing store is not mistaken for a leak).
"""

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench import wrk
from bench.load import Request, run_mixed
from bench.procs import Service, command_name, start_gateway, start_upstream
from bench.report import say
from bench.scenarios import SCENARIOS


def mix(gateway: Service) -> list[Request]:
    """The rotating requests of the soak."""
    requests = [
        SCENARIOS[name].request("gateway", gateway.base_url, gateway.api_key)
        for name in ("chat", "chat_hit", "stream", "embed", "embed_hit", "stream_hit")
    ]
    fresh = SCENARIOS["chat_hit"].request("gateway", gateway.base_url, gateway.api_key)
    body = fresh.body.replace(b"twenty words.", b"twenty words (__N__).")
    return [*requests, Request(fresh.url, body, fresh.headers)]


def _snapshot(gateway: Service, started: float) -> dict[str, Any]:
    memory, cpu = gateway.memory(), gateway.cpu_by_pid()
    processes = {
        f"{command_name(pid)}:{pid}": {**{k: v // 1024 for k, v in m.items()}, "cpu_s": round(cpu.get(pid, 0.0), 2)}
        for pid, m in memory.items()
    }
    return {"t": round(time.monotonic() - started, 1), "processes": processes}


async def _sample(gateway: Service, started: float, every: float, out: list[dict[str, Any]]) -> None:
    while True:
        out.append(_snapshot(gateway, started))
        await asyncio.sleep(every)


def _store_mb(data_dir: Path) -> float:
    path = data_dir / "store" / "data.mdb"
    return round(path.stat().st_size / 2**20, 1) if path.exists() else 0.0


def _report(samples: list[dict[str, Any]], warm_index: int) -> str:
    """RSS and RssAnon at the start (after warm-up) and end, RssFile and peak at the end, CPU over the soak (MiB, s).
    The CPU column shows how the load spread over the processes."""
    first, last = samples[warm_index], samples[-1]
    lines = [
        "process          RSS start  RSS end  delta  anon start  anon end  delta  file end  peak   cpu s"
        f"   (MiB; start = t {first['t']} s)"
    ]
    for name, end in last["processes"].items():
        start = first["processes"].get(name, {})
        rss0, rss1 = start.get("VmRSS", 0), end.get("VmRSS", 0)
        anon0, anon1 = start.get("RssAnon", 0), end.get("RssAnon", 0)
        cpu = end.get("cpu_s", 0.0) - start.get("cpu_s", 0.0)
        lines.append(
            f"{name:<16} {rss0:>9} {rss1:>8} {rss1 - rss0:>+6}  {anon0:>10} {anon1:>9} {anon1 - anon0:>+6}"
            f"  {end.get('RssFile', 0):>8} {end.get('VmHWM', 0):>5} {cpu:>7.1f}"
        )
    return "\n".join(lines)


async def _run(args: argparse.Namespace, log_dir: Path, data_dir: Path) -> dict[str, Any]:
    upstream = start_upstream(log_dir, chunks=args.chunks, dims=args.dims)
    gateway: Service | None = None
    try:
        gateway = start_gateway(log_dir, data_dir, upstream, workers=args.workers, launch="serve")
        requests = mix(gateway)
        samples: list[dict[str, Any]] = []
        started = time.monotonic()
        sampler = asyncio.create_task(_sample(gateway, started, args.every, samples))
        use_wrk = args.generator == "wrk" or (args.generator == "auto" and wrk.available())
        say(f"soak: {args.seconds:.0f} s, concurrency {args.concurrency}, {'wrk' if use_wrk else 'python'} load")
        try:
            if use_wrk:
                result = await wrk.run_wrk(requests, args.concurrency, args.seconds)
                done, errors = result.requests, result.errors
            else:
                load = await run_mixed(requests, args.concurrency, args.seconds)
                done, errors = len(load.totals) + load.errors, load.errors
        finally:
            sampler.cancel()
        samples.append(_snapshot(gateway, started))
        elapsed = time.monotonic() - started
    finally:
        if gateway is not None:
            gateway.stop()
        upstream.stop()
    warm_index = next((i for i, s in enumerate(samples) if s["t"] >= args.warm), 0)
    text = _report(samples, warm_index)
    say(f"{done} requests ({done / elapsed:.0f}/s), {errors} errors, store {_store_mb(data_dir)} MiB\n{text}")
    return {"requests": done, "errors": errors, "seconds": round(elapsed, 1), "samples": samples, "report": text}


def main(argv: list[str] | None = None) -> int:
    """Soak; exit 1 when requests failed."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="load duration (default 600)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--every", type=float, default=10.0, help="memory sample interval, seconds")
    parser.add_argument("--warm", type=float, default=30.0, help="the 'start' figures are taken after this many s")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--dims", type=int, default=1536)
    parser.add_argument("--out", type=Path, default=Path("bench-results-soak.json"))
    args = parser.parse_args(argv)
    args.warm = min(args.warm, args.seconds / 10)
    log_dir = Path(tempfile.mkdtemp(prefix="chittycan-soak-logs-"))
    say(f"process logs in {log_dir}")
    with tempfile.TemporaryDirectory(prefix="chittycan-soak-data-") as data_dir:
        import uvloop

        result = uvloop.run(_run(args, log_dir, Path(data_dir)))
    result["args"] = {k: str(v) for k, v in vars(args).items()}
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    say(f"wrote {args.out}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
