"""`python -m facade`: serve the OpenAI-compatible HTTP API."""

import asyncio
import logging
import os
import tomllib
from pathlib import Path

from aiohttp import web

from facade.app import create_app

DEFAULT_PORT = 8080
DEFAULT_ENGINE_ADDR = "127.0.0.1:50051"


def _server_settings() -> tuple[int, str]:
    """Port and engine address: CHITTYCAN_PORT / CHITTYCAN_ENGINE_ADDR, else the config [server] table."""
    path = Path(os.environ.get("CHITTYCAN_CONFIG", "chittycan.toml"))
    server = tomllib.loads(path.read_text()).get("server", {}) if path.exists() else {}
    port = int(os.environ.get("CHITTYCAN_PORT") or server.get("port", DEFAULT_PORT))
    engine = os.environ.get("CHITTYCAN_ENGINE_ADDR") or server.get("engine_addr", DEFAULT_ENGINE_ADDR)
    return port, engine


def main() -> None:
    """Run the facade until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    port, engine = _server_settings()
    try:
        import uvloop
    except ImportError:
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    web.run_app(
        create_app(engine),
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
