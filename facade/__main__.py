"""`python -m facade`: serve the OpenAI-compatible HTTP API."""

import asyncio
import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from facade.app import create_app

DEFAULT_PORT = 8080
DEFAULT_ENGINE_ADDR = "127.0.0.1:50051"
EXCHANGE_ENV = "CHITTYCAN_ENGINE_EXCHANGE"


def _server_settings() -> tuple[int, str]:
    """Port and engine address: CHITTYCAN_PORT / CHITTYCAN_ENGINE_ADDR, else the config [server] table."""
    path = Path(os.environ.get("CHITTYCAN_CONFIG", "chittycan.toml"))
    server = tomllib.loads(path.read_text()).get("server", {}) if path.exists() else {}
    port = int(os.environ.get("CHITTYCAN_PORT") or server.get("port", DEFAULT_PORT))
    engine = os.environ.get("CHITTYCAN_ENGINE_ADDR") or server.get("engine_addr", DEFAULT_ENGINE_ADDR)
    return port, engine


def exchange_framed_here(environ: Mapping[str, str] = os.environ) -> bool:
    """CHITTYCAN_ENGINE_EXCHANGE: `h2` (the default) frames the exchange stream on the facade's loop
    (clients.h2_stream), `grpc` leaves it to grpc.aio; anything else is a configuration error."""
    value = environ.get(EXCHANGE_ENV, "h2").strip().lower() or "h2"
    if value not in {"h2", "grpc"}:
        raise SystemExit(f"{EXCHANGE_ENV} must be h2 or grpc, not {value!r}")
    return value == "h2"


def main() -> None:
    """Run the facade until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    port, engine = _server_settings()
    h2_exchange = exchange_framed_here()
    try:
        import uvloop
    except ImportError:
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    web.run_app(
        create_app(engine, h2_exchange=h2_exchange),
        host=os.environ.get("CHITTYCAN_HOST", "0.0.0.0"),
        port=port,
        access_log=None,
        handler_cancellation=True,
        reuse_port=True,
        loop=loop,
        print=lambda message: logging.getLogger("facade").info("%s (engine at %s)", message, engine),
    )


if __name__ == "__main__":
    main()
