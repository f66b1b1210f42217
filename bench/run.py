"""`python -m bench`: direct upstream, ChittyCan (and LiteLLM) side by side, one table per scenario, JSON file."""

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import wrk
from bench.load import Request, run_load
from bench.measure import Cell, measure
from bench.procs import Service, settle, start_gateway, start_litellm, start_upstream
from bench.report import say, summary, summary_text, table, write_json
from bench.scenarios import DEFAULT_SCENARIOS, SCENARIOS

_LONG_CHUNKS = 200


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; every default is what `make bench` runs."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per cell (default 1)")
    parser.add_argument("--concurrency", type=_ints, default=(1, 32, 256), help="comma list (default 1,32,256)")
    parser.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS), help=f"of {','.join(SCENARIOS)}")
    parser.add_argument("--workers", type=int, default=2, help="engine and facade processes each (default 2)")
    parser.add_argument("--engines", type=int, default=None, help="engines when --launch processes (default W)")
    parser.add_argument("--launch", choices=("serve", "processes"), default="serve", help="can serve, or by hand")
    parser.add_argument("--litellm", action="store_true", help="also load LiteLLM's proxy from --litellm-venv")
    parser.add_argument("--litellm-venv", type=Path, default=Path(".venv-litellm"))
    parser.add_argument("--litellm-workers", type=int, default=None, help="LiteLLM workers (default --workers)")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct rows (profiling runs)")
    parser.add_argument("--no-gateway", action="store_true", help="skip ChittyCan (LiteLLM alone)")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto", help="non-stream load")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks of an ordinary stream")
    parser.add_argument("--dims", type=int, default=1536, help="embedding dimensions")
    parser.add_argument("--out", type=Path, default=Path("bench-results.json"))
    parser.add_argument("--hold", type=float, default=0.0, help="after starting, serve this many s (for py-spy)")
    return parser.parse_args(argv)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=False)
    except OSError:
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


async def _warm_cache(request: Request) -> None:
    """One request, so a cached scenario's entry exists before it is measured; the cache write is batched."""
    samples = await run_load(request, 1, 30.0, limit=1)
    if samples.errors:
        raise RuntimeError(f"warming the cache failed: {samples.first_error}")
    await asyncio.sleep(0.5)


async def _run(args: argparse.Namespace, log_dir: Path, data_dir: Path) -> tuple[list[Cell], dict[str, Any]]:
    generator = "wrk" if args.generator == "wrk" or (args.generator == "auto" and wrk.available()) else "python"
    names = [n for n in args.scenarios.split(",") if n]
    services: list[Service] = []
    cells: list[Cell] = []
    try:
        upstream = start_upstream(log_dir, chunks=args.chunks, dims=args.dims)
        services.append(upstream)
        targets: list[Service] = [] if args.no_direct else [upstream]
        if not args.no_gateway:
            gateway = start_gateway(
                log_dir, data_dir, upstream, workers=args.workers, launch=args.launch, engines=args.engines
            )
            services.append(gateway)
            targets.append(gateway)
        if args.litellm:
            litellm = start_litellm(log_dir, args.litellm_venv, upstream, workers=args.litellm_workers or args.workers)
            services.append(litellm)
            targets.append(litellm)
        pids = {s.name: s.measured() for s in services}
        say(f"started: {pids}; load generator for non-stream cells: {generator}")
        if args.hold:
            say(f"holding {args.hold:.0f} s; gateway at {targets[-1].base_url}")
            await asyncio.sleep(args.hold)
        for name in names:
            scenario = SCENARIOS[name]
            scenario_cells: list[Cell] = []
            for target in targets:
                if scenario.cached and target is not upstream:
                    await _warm_cache(scenario.request(_kind(target), target.base_url, target.api_key))
            for concurrency in scenario.concurrencies or args.concurrency:
                for target in targets:
                    await asyncio.to_thread(settle, services)
                    request = scenario.request(_kind(target), target.base_url, target.api_key)
                    cell = await measure(
                        scenario=name,
                        target=target,
                        request=request,
                        concurrency=concurrency,
                        seconds=args.seconds,
                        warmup=args.warmup,
                        generator="python" if scenario.stream else generator,
                        upstream=upstream,
                        services=services,
                    )
                    cell.target = _kind(target)
                    scenario_cells.append(cell)
                    say(f"  {name} {cell.target} c={concurrency}: {cell.rps} req/s p50 {cell.p50} ms")
            cells += scenario_cells
            say("\n" + table(name, scenario_cells) + "\n")
    finally:
        for service in reversed(services):
            service.stop()
    meta = {"generator": generator, "services": {s.name: s.log_path.name for s in services}}
    return cells, meta


def _kind(service: Service) -> str:
    return "direct" if service.name == "upstream" else service.name


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 when a direct or ChittyCan request failed (LiteLLM's failures are only shown)."""
    args = parse_args(argv)
    unknown = [n for n in args.scenarios.split(",") if n and n not in SCENARIOS]
    if unknown:
        sys.stderr.write(f"unknown scenarios: {unknown}\n")
        return 2
    started = time.time()
    log_dir = Path(tempfile.mkdtemp(prefix="chittycan-bench-logs-"))
    say(f"process logs in {log_dir}")
    with tempfile.TemporaryDirectory(prefix="chittycan-bench-data-") as data_dir:
        import uvloop

        cells, meta = uvloop.run(_run(args, log_dir, Path(data_dir)))
    rows = summary(cells, args.chunks, _LONG_CHUNKS)
    say(summary_text(rows))
    meta.update(
        {
            "command": " ".join(sys.argv),
            "args": {k: str(v) for k, v in vars(args).items()},
            "commit": _git_commit(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "started_unix": int(started),
            "wall_seconds": round(time.time() - started, 1),
        }
    )
    write_json(args.out, meta, cells, rows)
    say(f"wrote {args.out} ({meta['wall_seconds']} s)")
    errors = sum(c.errors for c in cells if c.target != "litellm")
    if errors:
        sys.stderr.write(f"{errors} requests to the upstream or ChittyCan failed; see the first errors above\n")
    return 1 if errors else 0
