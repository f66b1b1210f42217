"""The gateway as real processes on loopback (scripted upstream, engine, facade), for subprocess tests.

Each process logs to `<data_dir>/logs/<name>.{out,err}` rather than a pipe, so a chatty process can never block
on a full pipe; the captured stderr goes into the error raised when a process fails to come up.
"""

from __future__ import annotations

import functools
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from clients.supervisor import GRPC_EXPERIMENTS_ENV, GRPC_TRANSPORT_EXPERIMENTS

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
_POLL_INTERVAL = 0.05
# Provider keys the gateway would use when a caller sends no key of its own; tests pass their own sk-... key.
_GATEWAY_KEYS = {
    "OPENAI_API_KEY": "sk-gateway-openai",
    "ANTHROPIC_API_KEY": "sk-ant-gateway",
    "GROQ_API_KEY": "gsk-gateway",
}


class GatewayStartError(RuntimeError):
    """A gateway process exited or did not become ready in time; the message carries the captured stderr."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class _Process:
    """One child process and the files its output goes to."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    files: tuple[IO[bytes], IO[bytes]]

    def stderr_tail(self, limit: int = 4000) -> str:
        text = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        return text[-limit:]

    def stop(self) -> None:
        """SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL; closes the log files."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(STOP_TIMEOUT)
        for file in self.files:
            file.close()


@dataclass
class GatewayProcesses:
    """A running gateway (facade, engines) and, unless one was given, its scripted upstream. A context manager."""

    base_url: str
    engine_addr: str
    upstream_url: str
    data_dir: Path
    env: dict[str, str]
    engine_addrs: list[str] = field(default_factory=list)
    _processes: list[_Process] = field(default_factory=list, repr=False)

    def __enter__(self) -> GatewayProcesses:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM the facade, then the engines, then the upstream; each gets STOP_TIMEOUT before SIGKILL."""
        while self._processes:
            self._processes.pop().stop()

    def stderr(self) -> str:
        """The captured stderr of every process, for assertion messages."""
        return _describe(self._processes)


def gateway_env(data_dir: Path, upstream_url: str, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the gateway processes run with: this one minus any CHITTYCAN_* settings, every provider
    pointed at `upstream_url`, and no config file (CHITTYCAN_CONFIG names a file that does not exist)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHITTYCAN_")}
    env.update(_GATEWAY_KEYS)
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "CHITTYCAN_CONFIG": str(data_dir / "absent.toml"),
            "CHITTYCAN_DATA_DIR": str(data_dir),
            "CHITTYCAN_HOST": HOST,
            "CHITTYCAN_OPENAI_BASE_URL": f"{upstream_url}/v1",
            "CHITTYCAN_ANTHROPIC_BASE_URL": upstream_url,
            "CHITTYCAN_GROQ_BASE_URL": f"{upstream_url}/v1",
            "OLLAMA_BASE_URL": upstream_url,
        }
    )
    env.update(extra_env or {})
    return env


def start_gateway_processes(
    data_dir: Path,
    *,
    extra_env: dict[str, str] | None = None,
    upstream_url: str | None = None,
    engines: int = 1,
    serve_workers: int | None = None,
) -> GatewayProcesses:
    """Start the upstream (unless `upstream_url` is given), `engines` engines sharing `data_dir`, and the facade
    (talking to the first engine), each waited on until ready; with `serve_workers`, `can serve --workers N`
    instead of the engines and the facade.

    Raises GatewayStartError (after stopping whatever did start) if a process exits or is not ready within
    READY_TIMEOUT seconds.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "logs").mkdir(exist_ok=True)
    started: list[_Process] = []
    try:
        if upstream_url is None:
            upstream = _spawn("upstream", [sys.executable, "-m", "tests.upstream", "--port", "0"], data_dir, None)
            started.append(upstream)
            upstream_url = f"http://{HOST}:{_wait_for_ready_line(upstream, started)}"
        env = gateway_env(data_dir, upstream_url, extra_env)
        if serve_workers is None:
            engine_addrs, port = _start_engines_and_facade(env, engines, data_dir, started)
        else:
            engine_addrs, port = _start_can_serve(env, serve_workers, data_dir, started)
        _wait_until(lambda: _readyz_ok(port), f"facade GET /readyz on port {port}", started)
    except BaseException:
        for process in reversed(started):
            process.stop()
        raise
    return GatewayProcesses(
        base_url=f"http://{HOST}:{port}/v1",
        engine_addr=engine_addrs[0],
        upstream_url=upstream_url,
        data_dir=data_dir,
        env=env,
        engine_addrs=engine_addrs,
        _processes=started,
    )


def _start_engines_and_facade(
    env: dict[str, str], engines: int, data_dir: Path, started: list[_Process]
) -> tuple[list[str], int]:
    """`engines` engines and a facade talking to the first, with the gRPC transport `can serve` would give them
    (`env`, which CLIs use too, stays without it). Returns the engine addresses and the facade's port."""
    served = {GRPC_EXPERIMENTS_ENV: GRPC_TRANSPORT_EXPERIMENTS, **env}
    engine_addrs = []
    for index in range(engines):
        addr = f"{HOST}:{free_port()}"
        name = "engine" if index == 0 else f"engine{index + 1}"
        engine = _spawn(name, [sys.executable, "-m", "engine"], data_dir, {**served, "CHITTYCAN_ENGINE_ADDR": addr})
        started.append(engine)
        _wait_until(functools.partial(_accepts_tcp, addr), f"{name} listening on {addr}", started)
        engine_addrs.append(addr)
    port = free_port()
    env.update({"CHITTYCAN_ENGINE_ADDR": engine_addrs[0], "CHITTYCAN_PORT": str(port)})
    started.append(_spawn("facade", [sys.executable, "-m", "facade"], data_dir, {**served, **env}))
    return engine_addrs, port


def _start_can_serve(
    env: dict[str, str], workers: int, data_dir: Path, started: list[_Process]
) -> tuple[list[str], int]:
    """`can serve --workers N`, which gives its processes their gRPC transport itself."""
    engine_addr, port = f"{HOST}:{free_port()}", free_port()
    env.update({"CHITTYCAN_ENGINE_ADDR": engine_addr, "CHITTYCAN_PORT": str(port)})
    can = str(Path(sys.executable).with_name("can"))
    started.append(_spawn("can-serve", [can, "serve", "--workers", str(workers)], data_dir, env))
    return [engine_addr], port


def _spawn(name: str, argv: list[str], data_dir: Path, env: dict[str, str] | None) -> _Process:
    logs = data_dir / "logs"
    stdout_path, stderr_path = logs / f"{name}.out", logs / f"{name}.err"
    out = stdout_path.open("wb")
    err = stderr_path.open("wb")
    popen = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    return _Process(name, popen, stdout_path, stderr_path, (out, err))


def _wait_for_ready_line(upstream: _Process, started: list[_Process]) -> int:
    """The port from the upstream's `READY <port>` line."""
    port: list[int] = []

    def ready() -> bool:
        for line in upstream.stdout_path.read_text(errors="replace").splitlines():
            if line.startswith("READY "):
                port.append(int(line.split()[1]))
                return True
        return False

    _wait_until(ready, "upstream READY line", started)
    return port[0]


def _wait_until(check: Callable[[], bool], what: str, started: list[_Process]) -> None:
    """Poll `check` until true; raise GatewayStartError if a started process exits or READY_TIMEOUT passes."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not check():
        exited = [p for p in started if p.popen.poll() is not None]
        if exited:
            names = ", ".join(f"{p.name} (exit {p.popen.returncode})" for p in exited)
            raise GatewayStartError(f"waiting for {what}: {names} exited\n{_describe(started)}")
        if time.monotonic() > deadline:
            raise GatewayStartError(f"{what}: not ready after {READY_TIMEOUT:.0f} s\n{_describe(started)}")
        time.sleep(_POLL_INTERVAL)


def _accepts_tcp(addr: str) -> bool:
    host, _, port = addr.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _readyz_ok(port: int) -> bool:
    conn = http.client.HTTPConnection(HOST, port, timeout=2.0)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _describe(processes: list[_Process]) -> str:
    return "\n".join(f"--- {p.name} stderr ---\n{p.stderr_tail()}" for p in processes)
