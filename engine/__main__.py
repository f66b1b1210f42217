"""`python -m engine`: run the routing engine."""

import asyncio
import logging
import sys

from engine.config import load_settings
from engine.request_log import RequestLog
from engine.server import run


def main() -> None:
    """Load settings and serve."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    request_log = RequestLog.from_env(sys.stdout)
    settings = load_settings()
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(settings, request_log))
    else:
        uvloop.run(run(settings, request_log))


if __name__ == "__main__":
    main()
