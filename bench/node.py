"""`python -m bench.node`: the playbook's cost-metering script (Node SDK, 1,000 sequential cached calls), timed
straight against the zero-latency upstream and through the gateway, alternately, in one run (issue 3's target:
under 1.5 s through the gateway)."""

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs of the script per target (default 3)")
    parser.add_argument("--workers", type=int, default=1, help="can serve --workers (default 1)")
    parser.add_argument("--out", default="bench-results-node.json")
    args = parser.parse_args()
    npx = shutil.which("npx")
    if npx is None or not (REPO / "node_modules" / ".bin" / "ts-node").exists():
        sys.exit("needs npx and node_modules (make node)")
    work = Path(tempfile.mkdtemp(prefix="chittycan-bench-node-"))
    upstream = start_upstream(work, chunks=20, dims=1536)
    gateway = start_gateway(work, work / "data", upstream, workers=args.workers, launch="serve")
    results: dict[str, list[float]] = {"direct": [], "gateway": []}
    try:
        for run in range(1, args.runs + 1):
            for target, service in (("direct", upstream), ("gateway", gateway)):
                seconds = run_script(npx, service.base_url, service.api_key)
                results[target].append(seconds)
                say(f"run {run} {target:8} 1000-calls {seconds:.3f} s")
    finally:
        gateway.stop()
        upstream.stop()
    direct, through = statistics.median(results["direct"]), statistics.median(results["gateway"])
    say(
        f"median: direct {direct:.3f} s, gateway {through:.3f} s ({through / direct:.2f}x, "
        f"+{(through - direct):.3f} ms per call); target < {TARGET_SECONDS} s: "
        + ("met" if through < TARGET_SECONDS else "missed")
    )
    Path(args.out).write_bytes(orjson.dumps({"args": vars(args), "seconds": results}, option=orjson.OPT_INDENT_2))
    say(f"wrote {args.out}")


if __name__ == "__main__":
    main()
