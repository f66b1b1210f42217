"""`can serve`: run engine and facade processes together; Ctrl-C (or SIGTERM) stops them all cleanly."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping

_READY_TIMEOUT = 30.0


def _wait_for_port(addr: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    host, _, port = addr.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the engine exited with status {process.returncode} before listening")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the engine did not listen on {addr} within {timeout:.0f} s")


def serve(workers: int, env: Mapping[str, str], engine_addr: str) -> int:
    """Start `workers` engines (sharing the port and the LMDB store) and `workers` facades (SO_REUSEPORT)."""
    child_env = dict(env)
    processes: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for _ in range(workers):
            processes.append(subprocess.Popen([sys.executable, "-m", "engine"], env=child_env))
        _wait_for_port(engine_addr, processes[0], _READY_TIMEOUT)
        for _ in range(workers):
            processes.append(subprocess.Popen([sys.executable, "-m", "facade"], env=child_env))
        while not stopping:
            if any(p.poll() is not None for p in processes):
                print("a gateway process exited; stopping the others", file=sys.stderr)  # noqa: T201
                break
            time.sleep(0.2)
    finally:
        for process in reversed(processes):  # facades first, so no request reaches a stopped engine
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(processes):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
    failed = [p.returncode for p in processes if p.returncode not in (0, -signal.SIGTERM)]
    return 0 if stopping and not failed else 1


def default_workers() -> int:
    """One engine and one facade per core is the benchmark's sweet spot; `make run` uses 1 of each."""
    return max(1, os.cpu_count() or 1)
