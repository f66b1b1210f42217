"""The processes under test (upstream, gateway, LiteLLM): start, wait until ready, measure CPU and RSS, stop.

CPU and memory come straight from /proc, so nothing extra is installed and nothing samples during a run:
CPU is utime+stime of each process (all its threads), peak memory is the kernel's own high-water mark (VmHWM).
"""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
_TICKS = os.sysconf("SC_CLK_TCK")
_READY_TIMEOUT = 120.0


class StartError(RuntimeError):
    """A process did not come up; the message carries the tail of its log."""


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of `pid` so far (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def thread_cpu(pid: int) -> dict[tuple[int, str], float]:
    """CPU seconds so far of each thread of `pid`, keyed by (thread id, thread name)."""
    out: dict[tuple[int, str], float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[(int(tid), stat[stat.index("(") + 1 : stat.rindex(")")])] = (int(fields[11]) + int(fields[12])) / _TICKS
    return out


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (from /proc/stat), to see load from outside the run."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _TICKS


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS), RssAnon and RssFile of `pid`, in KiB."""
    out: dict[str, int] = {}
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[name] = int(value.split()[0])
    return out


def children_of(root: int) -> list[int]:
    """Every descendant of `root`, found by scanning /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    queue = [root]
    while queue:
        kids = parents.get(queue.pop(), [])
        found.extend(kids)
        queue.extend(kids)
    return found


def command_name(pid: int) -> str:
    """A short label for a process: `engine`, `facade`, or its program name."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    if b"-m" in argv and argv.index(b"-m") + 1 < len(argv):
        return argv[argv.index(b"-m") + 1].decode()
    return Path(argv[0].decode()).name if argv and argv[0] else "?"


def listening_pids(port: int, candidates: list[int]) -> set[int]:
    """Which of `candidates` hold a listening TCP socket on `port` (SO_REUSEPORT lets several)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    found: set[int] = set()
    for pid in candidates:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if any(link.startswith("socket:[") and link[8:-1] in inodes for link in links):
            found.add(pid)
    return found


@dataclass
class Service:
    """A started process tree; `measured()` are the pids whose CPU and memory count as this service's."""

    name: str
    popen: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    measured: Callable[[], list[int]]
    api_key: str = "sk-bench"
    others: list["Service"] = field(default_factory=list)

    def log_tail(self, limit: int = 3000) -> str:
        """The end of the service's log."""
        return self.log_path.read_text(errors="replace")[-limit:] if self.log_path.exists() else ""

    def cpu(self) -> float:
        """CPU seconds used so far by the measured processes."""
        return sum(self.cpu_by_pid().values())

    def cpu_by_pid(self) -> dict[int, float]:
        """CPU seconds used so far by each measured process."""
        return {pid: cpu_seconds(pid) for pid in self.measured()}

    def memory(self) -> dict[int, dict[str, int]]:
        """Per measured pid, its memory figures (KiB) and name."""
        return {pid: {**memory_kb(pid)} for pid in self.measured()}

    def stop(self) -> None:
        """SIGTERM the tree's root (supervisors stop their children), then SIGKILL whatever is left."""
        for other in reversed(self.others):
            other.stop()
        tree = [*children_of(self.popen.pid)]
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue


def settle(services: list[Service], *, quiet_pct: float = 5.0, window: float = 0.5, limit: float = 60.0) -> float:
    """Wait until `services` together use under `quiet_pct` of one core over `window` seconds (a process still
    booting or still draining a previous cell's backlog would skew the next cell); returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        before = sum(s.cpu() for s in services)
        time.sleep(window)
        if (sum(s.cpu() for s in services) - before) / window * 100 < quiet_pct:
            break
    return time.monotonic() - started


def _spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path, cwd: Path | None = None) -> Service:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
    return Service(name, popen, "", log_path, lambda: [popen.pid])


def _wait(service: Service, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if service.popen.poll() is not None:
            raise StartError(f"{service.name} exited ({service.popen.returncode}):\n{service.log_tail()}")
        if ready():
            return
        time.sleep(0.1)
    service.stop()
    raise StartError(f"{service.name} did not {what} within {_READY_TIMEOUT:.0f} s:\n{service.log_tail()}")


def _http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def start_upstream(log_dir: Path, *, chunks: int, dims: int) -> Service:
    """The zero-latency upstream on a free port."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.upstream", "--port", str(port), "--chunks", str(chunks)]
    service = _spawn("upstream", [*argv, "--dims", str(dims)], dict(os.environ), log_dir)
    service.base_url = f"http://{HOST}:{port}"
    _wait(service, lambda: _http_ok(f"{service.base_url}/stats"), "listen")
    return service


def start_gateway(
    log_dir: Path, data_dir: Path, upstream: Service, *, workers: int, launch: str, engines: int | None = None
) -> Service:
    """ChittyCan via `can serve --workers N` (launch="serve"), or as separate engine and facade processes
    (launch="processes": `engines` engines, default N, and N facades), all sharing one port each."""
    port, engine_port = free_port(), free_port()
    env = {
        **os.environ,
        "CHITTYCAN_DATA_DIR": str(data_dir),
        "CHITTYCAN_PORT": str(port),
        "CHITTYCAN_HOST": HOST,
        "CHITTYCAN_ENGINE_ADDR": f"{HOST}:{engine_port}",
        "CHITTYCAN_OPENAI_BASE_URL": f"{upstream.base_url}/v1",
        "CHITTYCAN_CONFIG": str(data_dir / "absent.toml"),
    }
    if launch == "serve":
        can = Path(sys.executable).with_name("can")
        service = _spawn("gateway", [str(can), "serve", "--workers", str(workers)], env, log_dir)
        root = service.popen.pid
        service.measured = lambda: [p for p in children_of(root) if command_name(p) in ("engine", "facade")]
    else:
        service = _spawn("engine-0", [sys.executable, "-m", "engine"], env, log_dir)
        engine_up = lambda: any(listening_pids(engine_port, [service.popen.pid]))  # noqa: E731
        _wait(service, engine_up, "listen")
        for index in range(1, engines or workers):
            service.others.append(_spawn(f"engine-{index}", [sys.executable, "-m", "engine"], env, log_dir))
        for index in range(workers):
            service.others.append(_spawn(f"facade-{index}", [sys.executable, "-m", "facade"], env, log_dir))
        service.measured = lambda: [service.popen.pid, *(s.popen.pid for s in service.others)]
    service.base_url = f"http://{HOST}:{port}"

    def ready() -> bool:
        facades = [p for p in service.measured() if command_name(p) == "facade"]
        return (
            len(facades) == workers
            and len(listening_pids(port, facades)) == workers
            and _http_ok(f"{service.base_url}/readyz")
        )

    _wait(service, ready, f"serve with {workers} facades")
    return service


def litellm_config(upstream: Service) -> str:
    """LiteLLM proxy config: the same models on the same upstream, in-memory cache, no database."""
    lines = ["model_list:"]
    for name in ("gpt-4o", "text-embedding-3-small"):
        lines += [
            f"  - model_name: {name}",
            "    litellm_params:",
            f"      model: openai/{name}",
            f"      api_base: {upstream.base_url}/v1",
            "      api_key: sk-bench",
        ]
    lines += ["litellm_settings:", "  cache: true", "  cache_params:", "    type: local", ""]
    return "\n".join(lines)


def start_litellm(log_dir: Path, venv: Path, upstream: Service, *, workers: int) -> Service:
    """LiteLLM's proxy from its own venv. It refuses to start without a master key, so it gets a strong one."""
    port = free_port()
    config = log_dir / "litellm.yaml"
    config.write_text(litellm_config(upstream))
    master_key = "sk-" + secrets.token_hex(32)
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": master_key,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # the model price map is fetched from the network otherwise
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
    }
    env.pop("DATABASE_URL", None)
    argv = [str(venv.resolve() / "bin" / "litellm"), "--config", str(config), "--host", HOST, "--port", str(port)]
    argv += ["--num_workers", str(workers)]
    service = _spawn("litellm", argv, env, log_dir, cwd=log_dir)
    root = service.popen.pid
    service.measured = lambda: [root, *children_of(root)]
    service.base_url = f"http://{HOST}:{port}"
    service.api_key = master_key
    _wait(service, lambda: _http_ok(f"{service.base_url}/health/liveliness"), "answer /health/liveliness")
    return service
