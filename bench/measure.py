"""One benchmark cell: warm up, then load one target at one concurrency while its CPU and memory are read."""

import resource
import urllib.request
from dataclasses import dataclass, field

import orjson

from bench import wrk
from bench.load import Request, Samples, percentile, run_load
from bench.procs import Service, command_name, machine_busy_seconds


@dataclass
class Cell:
    """The numbers of one (scenario, target, concurrency) run. Times are milliseconds."""

    scenario: str
    target: str
    concurrency: int
    generator: str
    seconds: float
    requests: int
    errors: int
    rps: float
    p50: float
    p95: float
    p99: float
    mean: float
    ttfb_p50: float | None = None
    ttfb_p95: float | None = None
    ttfb_p99: float | None = None
    cpu_s: float | None = None
    cpu_s_per_1k: float | None = None
    rss_mb: float | None = None
    peak_rss_mb: float | None = None
    per_process: dict[str, dict[str, float]] = field(default_factory=dict)
    client_cpu_pct: float = 0.0
    other_cpu_pct: float = 0.0
    upstream_cpu_s_per_1k: float = 0.0
    upstream_requests: int = 0
    first_error: str = ""


def upstream_count(upstream: Service) -> int:
    """How many requests the upstream has answered."""
    with urllib.request.urlopen(f"{upstream.base_url}/stats", timeout=5) as resp:
        return int(orjson.loads(resp.read())["requests"])


def _client_cpu(generator: str) -> float:
    who = resource.RUSAGE_CHILDREN if generator == "wrk" else resource.RUSAGE_SELF
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


async def _drive(generator: str, request: Request, concurrency: int, seconds: float) -> Samples | wrk.WrkResult:
    if generator == "wrk":
        return await wrk.run_wrk([request], concurrency, seconds)
    return await run_load(request, concurrency, seconds)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _memory(service: Service, cpu: dict[int, float]) -> tuple[float, float, dict[str, dict[str, float]]]:
    """Sums of current and peak RSS (MiB), and per process its memory figures (MiB) and CPU seconds."""
    figures = service.memory()
    per = {
        f"{command_name(pid)}:{pid}": {**{k: round(v / 1024, 1) for k, v in mem.items()}, "cpu_s": cpu.get(pid, 0.0)}
        for pid, mem in sorted(figures.items())
    }
    rss = sum(m.get("VmRSS", 0) for m in figures.values()) / 1024
    peak = sum(m.get("VmHWM", 0) for m in figures.values()) / 1024
    return round(rss, 1), round(peak, 1), per


async def measure(
    *,
    scenario: str,
    target: Service,
    request: Request,
    concurrency: int,
    seconds: float,
    warmup: float,
    generator: str,
    upstream: Service,
    services: list[Service],
) -> Cell:
    """Warm up for `warmup` seconds, then measure for `seconds`; CPU is read only around the measured part.

    `other_cpu_pct` is the machine's busy time during the cell that none of `services` nor the load generator
    used (other work on a shared machine): cells where it is high are not to be trusted."""
    if warmup > 0:
        await _drive(generator, request, concurrency, warmup)
    counted = target is not upstream
    before_cpu = target.cpu_by_pid() if counted else {}
    before_up, before_up_cpu, before_client = upstream_count(upstream), upstream.cpu(), _client_cpu(generator)
    before_ours, before_busy = sum(s.cpu() for s in services), machine_busy_seconds()
    result = await _drive(generator, request, concurrency, seconds)
    after_busy, after_ours = machine_busy_seconds(), sum(s.cpu() for s in services)
    after_client, after_up_cpu = _client_cpu(generator), upstream.cpu()
    after_cpu = target.cpu_by_pid() if counted else {}
    cpu_delta = {pid: round(after_cpu[pid] - before_cpu.get(pid, 0.0), 3) for pid in after_cpu}
    cpu = sum(cpu_delta.values()) if counted else None
    reached = upstream_count(upstream) - before_up
    if isinstance(result, wrk.WrkResult):
        done, errors, elapsed = result.requests, result.errors, result.elapsed
        cell = Cell(scenario, target.name, concurrency, generator, elapsed, done, errors, done / elapsed, 0, 0, 0, 0)
        cell.p50, cell.p95, cell.p99, cell.mean = _ms(result.p50), _ms(result.p95), _ms(result.p99), _ms(result.mean)
    else:
        totals, ttfbs = sorted(result.totals), sorted(result.ttfbs)
        done, errors, elapsed = len(totals) + result.errors, result.errors, result.elapsed
        cell = Cell(
            scenario, target.name, concurrency, generator, elapsed, done, errors, len(totals) / elapsed, 0, 0, 0, 0
        )
        cell.p50, cell.p95, cell.p99 = (_ms(percentile(totals, p)) for p in (50, 95, 99))
        cell.mean = _ms(sum(totals) / len(totals)) if totals else 0.0
        if request.stream:
            cell.ttfb_p50, cell.ttfb_p95, cell.ttfb_p99 = (_ms(percentile(ttfbs, p)) for p in (50, 95, 99))
        cell.first_error = result.first_error
    cell.rps = round(cell.rps, 1)
    cell.seconds = round(elapsed, 3)
    client = after_client - before_client
    cell.client_cpu_pct = round(100 * client / elapsed, 1)
    other = (after_busy - before_busy) - (after_ours - before_ours) - client
    cell.other_cpu_pct = round(max(0.0, 100 * other / elapsed), 1)
    cell.upstream_requests = reached
    if done:
        cell.upstream_cpu_s_per_1k = round((after_up_cpu - before_up_cpu) / done * 1000, 4)
    if cpu is not None:
        cell.cpu_s = round(cpu, 3)
        cell.cpu_s_per_1k = round(cpu / done * 1000, 4) if done else None
        cell.rss_mb, cell.peak_rss_mb, cell.per_process = _memory(target, cpu_delta)
    return cell
