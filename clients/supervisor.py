"""`can serve`: run engine and facade processes together; Ctrl-C (or SIGTERM) stops them all cleanly.

With N workers there are N engines, sharing the TCP port (SO_REUSEPORT) and the LMDB store, and N facades on the
HTTP port. Each facade talks to its own engine over a Unix socket: gRPC over a Unix socket carries nearly twice
the calls of TCP loopback on the same CPU, and the pairing spreads the load evenly.

The processes run gRPC's classic TCP client and listener (`GRPC_EXPERIMENTS`, unless the environment sets it):
with grpcio 1.85's default EventEngine transport, every message crosses more threads, and a message on the
facade-engine stream cost ~40 % more CPU and wall time (micro-benchmark and `make bench` in bench/README.md).
"""

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

_READY_TIMEOUT = 30.0
GRPC_EXPERIMENTS_ENV = "GRPC_EXPERIMENTS"
GRPC_TRANSPORT_EXPERIMENTS = "-event_engine_client,-event_engine_listener"


def _wait_until_listening(path: Path, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the engine exited with status {process.returncode} before listening")
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(path))
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the engine did not listen on {path} within {timeout:.0f} s")


def serve(workers: int, env: Mapping[str, str]) -> int:
    """Start `workers` engine/facade pairs and supervise them until a signal or a process exit."""
    env = {GRPC_EXPERIMENTS_ENV: GRPC_TRANSPORT_EXPERIMENTS, **env}
    sockets = Path(tempfile.mkdtemp(prefix="chittycan-"))
    processes: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for index in range(workers):
            path = sockets / f"engine-{index}.sock"
            engine = subprocess.Popen([sys.executable, "-m", "engine"], env={**env, "CHITTYCAN_ENGINE_UNIX": str(path)})
            processes.append(engine)
            _wait_until_listening(path, engine, _READY_TIMEOUT)
            facade_env = {**env, "CHITTYCAN_ENGINE_ADDR": f"unix:{path}"}
            processes.append(subprocess.Popen([sys.executable, "-m", "facade"], env=facade_env))
        while not stopping:
            if any(p.poll() is not None for p in processes):
                print("a gateway process exited; stopping the others", file=sys.stderr)  # noqa: T201
                break
            time.sleep(0.2)
    finally:
        for process in reversed(processes):  # facades before their engines, so no request meets a stopped engine
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(processes):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(sockets, ignore_errors=True)
    failed = [p.returncode for p in processes if p.returncode not in (0, -signal.SIGTERM)]
    return 0 if stopping and not failed else 1
