"""`python -m bench.profile`: py-spy the engine and facade under one scenario's load; top functions per process.

Needs py-spy in the venv (`.venv/bin/pip install py-spy`). Runs one engine and one facade by default, so each
profile is one process; collapsed stacks are written beside the JSON for flame graphs (e.g. inferno, speedscope).
"""

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench import wrk
from bench.load import Request, run_load
from bench.procs import Service, command_name, settle, start_gateway, start_upstream, thread_cpu
from bench.report import say
from bench.scenarios import SCENARIOS


def _frame(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `module.py:func`, keeping the repo-relative path for our code."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for root in ("/engine/", "/facade/", "/clients/", "/site-packages/", "/python3.11/"):
        if root in path:
            path = root.strip("/") + "/" + path.split(root, 1)[1]
            break
    return f"{path}:{name}"


def top(collapsed: Path, limit: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """Total samples, then the top functions by self samples and by inclusive samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return total, own.most_common(limit), inclusive.most_common(limit)


def _table(title: str, rows: list[tuple[str, int]], total: int) -> str:
    lines = [title]
    lines += [f"  {100 * count / max(1, total):5.1f}%  {name}" for name, count in rows]
    return "\n".join(lines)


async def _drive(request: Request, stream: bool, concurrency: int, seconds: float) -> int:
    """Load for `seconds`; the number of requests completed."""
    if stream or not wrk.available():
        load = await run_load(request, concurrency, seconds)
        return len(load.totals)
    result = await wrk.run_wrk([request], concurrency, seconds)
    return result.requests - result.errors


async def _per_thread(gateway: Service, request: Request, stream: bool, args: argparse.Namespace) -> None:
    """CPU per request of each thread of each gateway process, measured without py-spy attached (it slows them)."""
    before = {pid: thread_cpu(pid) for pid in gateway.measured()}
    done = await _drive(request, stream, args.concurrency, args.seconds)
    say(f"without py-spy: {done / args.seconds:.0f} req/s; CPU per request by thread (us):")
    for pid, threads in before.items():
        after = thread_cpu(pid)
        used = sorted(((after.get(k, v) - v, k) for k, v in threads.items()), reverse=True)
        total = sum(u for u, _ in used)
        top = ", ".join(f"{name}/{tid} {1e6 * u / max(1, done):.0f}" for u, (tid, name) in used[:5] if u > 0)
        say(f"  {command_name(pid)}-{pid}: {1e6 * total / max(1, done):.0f} total; {top}")


async def _profile(args: argparse.Namespace, log_dir: Path, out_dir: Path) -> None:
    upstream = start_upstream(log_dir, chunks=args.chunks, dims=1536)
    gateway: Service | None = None
    try:
        gateway = start_gateway(
            log_dir, log_dir / "data", upstream, workers=args.workers, launch="processes", engines=args.engines
        )
        scenario = SCENARIOS[args.scenario]
        request = scenario.request("gateway", gateway.base_url, gateway.api_key)
        if scenario.cached:
            await run_load(request, 1, 10, limit=1)
            await asyncio.sleep(0.5)
        await asyncio.to_thread(settle, [upstream, gateway])
        await _per_thread(gateway, request, scenario.stream, args)
        await asyncio.to_thread(settle, [upstream, gateway])
        spies = []
        for pid in gateway.measured():
            name = f"{command_name(pid)}-{pid}"
            argv = [args.py_spy, "record", "-p", str(pid), "-d", str(int(args.seconds)), "-r", str(args.rate)]
            argv += ["--format", "raw", "-o", str(out_dir / f"{name}.collapsed"), *(["--native"] * args.native)]
            spy = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            spies.append((name, spy))
        done = await _drive(request, scenario.stream, args.concurrency, args.seconds + 1)
        say(f"under py-spy: {done / (args.seconds + 1):.0f} req/s")
        for name, spy in spies:
            _, err = await spy.communicate()
            if spy.returncode != 0:
                say(f"py-spy {name} failed: {err.decode(errors='replace')[-500:]}")
    finally:
        if gateway is not None:
            gateway.stop()
        upstream.stop()


def main(argv: list[str] | None = None) -> int:
    """Profile and print the top functions of each gateway process."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="chat", choices=sorted(SCENARIOS))
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--workers", type=int, default=1, help="facades (and engines unless --engines)")
    parser.add_argument("--engines", type=int, default=None)
    parser.add_argument("--native", action="store_true", help="include native (C) frames: gRPC core, protobuf")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="directory for collapsed stacks (default: a tmp dir)")
    args = parser.parse_args(argv)
    beside = Path(sys.executable).with_name("py-spy")
    args.py_spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if args.py_spy is None:
        sys.stderr.write("py-spy is not installed: .venv/bin/pip install py-spy\n")
        return 2
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="chittycan-profile-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="chittycan-profile-logs-"))
    import uvloop

    uvloop.run(_profile(args, log_dir, out_dir))
    for path in sorted(out_dir.glob("*.collapsed")):
        total, own, inclusive = top(path, args.top)
        say(f"\n#### {path.stem}: {total} samples ({args.scenario}, c={args.concurrency})")
        say(_table("self:", own, total))
        say(_table("inclusive:", inclusive, total))
    say(f"\ncollapsed stacks in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
