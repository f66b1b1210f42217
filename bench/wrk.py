"""Drives Debian's `wrk` with a generated Lua script: POST bodies, headers, and a JSON summary line at the end."""

import asyncio
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.load import Request

_MARK = "WRKJSON "

# wrk's done() sees its latency histogram (microseconds); percentiles are read from it so nothing is sampled.
_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50":%d,"p95":%d,"p99":%d,"mean":%.3f,"max":%d}\\n',
    "WRKJSON ", summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass(frozen=True)
class WrkResult:
    """wrk's own summary: completed requests (errors included), errors by kind, latency in seconds."""

    requests: int
    errors: int
    elapsed: float
    p50: float
    p95: float
    p99: float
    mean: float
    max: float


def available() -> bool:
    """Whether a `wrk` binary is on PATH."""
    return shutil.which("wrk") is not None


def _lua_string(value: str) -> str:
    level = "=" * 8
    return f"[{level}[{value}]{level}]"


def script_for(requests: list[Request]) -> str:
    """A wrk script sending `requests` in turn. One request uses wrk's fast path (built once); with several,
    a body containing `__N__` gets the request's sequence number there, so each one is new to a cache."""
    if len(requests) == 1:
        headers = "".join(
            f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}\n" for k, v in requests[0].headers.items()
        )
        body = _lua_string(requests[0].body.decode())
        return f'wrk.method = "POST"\nwrk.body = {body}\n{headers}{_DONE}'
    lines = ["local paths, heads, bodies = {}, {}, {}"]
    for request in requests:
        path = "/" + request.url.split("/", 3)[3]
        head = "".join(f"[ {_lua_string(k)} ] = {_lua_string(v)}, " for k, v in request.headers.items())
        lines.append(f"table.insert(paths, {_lua_string(path)})")
        lines.append(f"table.insert(heads, {{{head}}})")
        lines.append(f"table.insert(bodies, {_lua_string(request.body.decode())})")
    lines.append(_ROTATE)
    return "\n".join(lines) + "\n" + _DONE


_ROTATE = """
local turn = 0
function request()
  turn = turn + 1
  local i = (turn % #paths) + 1
  local body = string.gsub(bodies[i], "__N__", tostring(turn) .. "-" .. tostring(math.random(1e9)))
  return wrk.format("POST", paths[i], heads[i], body)
end
"""


async def run_wrk(requests: list[Request], concurrency: int, seconds: float, *, threads: int = 1) -> WrkResult:
    """Run wrk against the first request's URL; raises RuntimeError when wrk fails or prints no summary."""
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "load.lua"
        script.write_text(script_for(requests))
        proc = await asyncio.create_subprocess_exec(
            "wrk",
            f"-t{min(threads, concurrency)}",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            requests[0].url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
    text = out.decode(errors="replace")
    line = next((x for x in text.splitlines() if x.startswith(_MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {text[-500:]} {err.decode(errors='replace')[-500:]}")
    data = orjson.loads(line[len(_MARK) :])
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return WrkResult(
        requests=data["requests"],
        errors=errors,
        elapsed=data["duration_us"] / 1e6,
        p50=data["p50"] / 1e6,
        p95=data["p95"] / 1e6,
        p99=data["p99"] / 1e6,
        mean=data["mean"] / 1e6,
        max=data["max"] / 1e6,
    )
