"""`python -m bench.node`: the playbook's cost-metering script (Node SDK, 1,000 sequential cached calls), timed
straight against the zero-latency upstream and through the gateway, alternately, in one run (issue 3's target:
under 1.5 s through the gateway); then `bench/node_calls.mjs`, which times each call after a warm-up, against
both, for the per-call picture behind the totals."""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

from bench.procs import start_gateway, start_upstream
from bench.report import say

REPO = Path(__file__).resolve().parent.parent
SCRIPT = "tests/cost-metering.test.ts"
_TIMING = re.compile(r"1000-calls: ([\d.]+)(m?s)")
TARGET_SECONDS = 1.5


def run_script(npx: str, base_url: str, api_key: str) -> float:
    """Seconds the script printed for its 1,000 calls against `base_url`."""
    env = {**os.environ, "OPENAI_API_KEY": api_key, "OPENAI_BASE": f"{base_url}/v1"}
    done = subprocess.run(
        [npx, "ts-node", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=True
    )
    found = _TIMING.search(done.stdout)
    if found is None:
        raise RuntimeError(f"{SCRIPT} printed no 1000-calls timing:\n{done.stdout}\n{done.stderr}")
    value = float(found.group(1))
    return value / 1000 if found.group(2) == "ms" else value


def per_call(urls: dict[str, str], api_key: str, calls: int) -> dict[str, dict[str, float]]:
    """Per target: mean, p50, p90, p99 (ms) and calls over 2 ms, of `calls` calls timed one by one after 300
    warm-up calls, the targets called in turn."""
    env = {**os.environ, "OPENAI_API_KEY": api_key}
    argv = ["node", "bench/node_calls.mjs", str(calls), *(f"{url}/v1" for url in urls.values())]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"bench/node_calls.mjs failed:\n{done.stdout}\n{done.stderr}")
    by_url = orjson.loads(done.stdout.strip().splitlines()[-1])
    return {target: by_url[f"{url}/v1"] for target, url in urls.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs of the script per target (default 3)")
    parser.add_argument("--workers", type=int, default=1, help="can serve --workers (default 1)")
    parser.add_argument("--calls", type=int, default=2000, help="calls timed one by one per target, in turn (0: skip)")
    parser.add_argument("--out", default="bench-results-node.json")
    args = parser.parse_args()
    npx = shutil.which("npx")
    if npx is None or not (REPO / "node_modules" / ".bin" / "ts-node").exists():
        sys.exit("needs npx and node_modules (make node)")
    work = Path(tempfile.mkdtemp(prefix="chittycan-bench-node-"))
    upstream = start_upstream(work, chunks=20, dims=1536)
    gateway = start_gateway(work, work / "data", upstream, workers=args.workers, launch="serve")
    results: dict[str, list[float]] = {"direct": [], "gateway": []}
    calls: dict[str, dict[str, float]] = {}
    try:
        for run in range(1, args.runs + 1):
            for target, service in (("direct", upstream), ("gateway", gateway)):
                seconds = run_script(npx, service.base_url, service.api_key)
                results[target].append(seconds)
                say(f"run {run} {target:8} 1000-calls {seconds:.3f} s")
        if args.calls:
            calls = per_call({"direct": upstream.base_url, "gateway": gateway.base_url}, gateway.api_key, args.calls)
        for target, figures in calls.items():
            say(
                f"per call {target:8} mean {figures['mean']:.3f} p50 {figures['p50']:.3f} p90 {figures['p90']:.3f} "
                f"p99 {figures['p99']:.3f} ms, {figures['over_2ms']:.0f} of {args.calls} over 2 ms"
            )
    finally:
        gateway.stop()
        upstream.stop()
    direct, through = statistics.median(results["direct"]), statistics.median(results["gateway"])
    say(
        f"median: direct {direct:.3f} s, gateway {through:.3f} s ({through / direct:.2f}x, "
        f"+{(through - direct):.3f} ms per call); target < {TARGET_SECONDS} s: "
        + ("met" if through < TARGET_SECONDS else "missed")
    )
    if calls:
        added = calls["gateway"]["p50"] - calls["direct"]["p50"]
        say(f"per call: the gateway adds {added:.3f} ms at p50 under the Node SDK")
    report = {"args": vars(args), "seconds": results, "per_call_ms": calls}
    Path(args.out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    say(f"wrote {args.out}")


if __name__ == "__main__":
    main()
