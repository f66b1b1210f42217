"""`python -m engine`: run the routing engine."""

import asyncio
import logging

from engine import request_log
from engine.config import load_settings
from engine.server import run


def main() -> None:
    """Load settings and serve."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    request_log.configure()
    settings = load_settings()
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(settings))
    else:
        uvloop.run(run(settings))


if __name__ == "__main__":
    main()
