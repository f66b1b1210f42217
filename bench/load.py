"""The asyncio load generator: fixed concurrency for a fixed time, per-request latency, TTFB for streams.

It is used for streams (wrk cannot see the first chunk), for every scenario when wrk is missing, and by the
soak. Each worker owns one keep-alive connection, as wrk's do, so both generators load the server alike.
"""

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp

_DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class Request:
    """One HTTP request, sent again and again."""

    url: str
    body: bytes
    headers: dict[str, str]
    stream: bool = False


@dataclass
class Samples:
    """What one load run saw: per-request totals and (streams) time to first body byte, in seconds."""

    totals: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0
    first_error: str = ""


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


async def _one(session: aiohttp.ClientSession, request: Request, samples: Samples) -> None:
    started = time.perf_counter()
    async with session.post(request.url, data=request.body, headers=request.headers) as resp:
        if not request.stream:
            body = await resp.read()
            ok = resp.status == 200
        else:
            first = 0.0
            tail = b""
            async for piece in resp.content.iter_any():
                if not first:
                    first = time.perf_counter()
                tail = (tail + piece)[-len(_DONE) :]
            body = tail
            ok = resp.status == 200 and tail == _DONE
    done = time.perf_counter()
    if not ok:
        samples.errors += 1
        samples.statuses[resp.status] = samples.statuses.get(resp.status, 0) + 1
        samples.first_error = samples.first_error or f"HTTP {resp.status}: {body[:300]!r}"
        return
    samples.totals.append(done - started)
    if request.stream:
        samples.ttfbs.append(first - started)


async def _worker(request: Request, deadline: float, samples: Samples, limit: int | None) -> None:
    connector = aiohttp.TCPConnector(limit=1, force_close=False)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        while time.perf_counter() < deadline and (limit is None or len(samples.totals) + samples.errors < limit):
            try:
                await _one(session, request, samples)
            except (aiohttp.ClientError, TimeoutError) as exc:
                samples.errors += 1
                samples.first_error = samples.first_error or repr(exc)


async def run_load(request: Request, concurrency: int, seconds: float, *, limit: int | None = None) -> Samples:
    """Keep `concurrency` requests in flight for `seconds` (or until `limit` requests finished)."""
    samples = Samples()
    started = time.perf_counter()
    deadline = started + seconds
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(_worker(request, deadline, samples, limit))
    samples.elapsed = time.perf_counter() - started
    return samples


async def run_mixed(requests: list[Request], concurrency: int, seconds: float) -> Samples:
    """Workers cycle through `requests` in turn, offset so that every kind is in flight at once (the soak).

    A body containing `__N__` gets a sequence number there, so each of those requests is new to a cache."""
    samples = Samples()
    started = time.perf_counter()
    deadline = started + seconds

    async def worker(offset: int) -> None:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            turn = offset
            while time.perf_counter() < deadline:
                request = requests[turn % len(requests)]
                if b"__N__" in request.body:
                    body = request.body.replace(b"__N__", f"{offset}-{turn}".encode())
                    request = Request(request.url, body, request.headers, request.stream)
                try:
                    await _one(session, request, samples)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    samples.errors += 1
                    samples.first_error = samples.first_error or repr(exc)
                turn += 1

    async with asyncio.TaskGroup() as group:
        for index in range(concurrency):
            group.create_task(worker(index))
    samples.elapsed = time.perf_counter() - started
    return samples
