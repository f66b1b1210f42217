"""`can registry metrics show [--since 24h] [--json] [--watch]`: the dashboard, from the engine's UsageService
(with the master key, found as for the admin commands)."""

import argparse
import asyncio
import contextlib
import sys
import time
from typing import TextIO

import orjson
from google.protobuf import timestamp_pb2

from clients.admin import no_master_key, read_master_key
from clients.cli_auth import parse_duration
from clients.dashboard_view import figures_to_json, render_box
from clients.errors import GatewayCallError
from clients.usage import UsageClient
from engine.config import load_settings

# Without new records the window still slides; redraw at least this often (seconds) when watching.
_REDRAW_SECONDS = 30.0
_CLEAR_SCREEN = "\x1b[H\x1b[2J"


def _window(text: str) -> str:
    """A --since value, checked (e.g. `24h`) and kept as written for the title."""
    parse_duration(text)
    return text.strip()


def _since(seconds: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(time.time_ns() - seconds * 10**9)
    return stamp


async def _show(usage: UsageClient, args: argparse.Namespace, out: TextIO, *, watching: bool) -> None:
    figures = await usage.dashboard(_since(parse_duration(args.since)))
    if args.json:
        option = 0 if watching else orjson.OPT_INDENT_2
        out.write(orjson.dumps(figures_to_json(figures, args.since), option=option).decode() + "\n")
    else:
        out.write((_CLEAR_SCREEN if watching and out.isatty() else "") + render_box(figures, args.since))
    out.flush()


async def _watch(usage: UsageClient, args: argparse.Namespace, out: TextIO) -> None:
    """Redraw whenever the usage stream reports new records (records arriving during a redraw coalesce)."""
    stream = usage.watch()
    await stream.ready()
    changed = asyncio.Event()

    async def follow() -> None:
        try:
            async for _ in stream:
                changed.set()
        finally:
            changed.set()  # wake the redraw loop, which then sees the stream has ended

    try:
        async with asyncio.TaskGroup() as tasks:
            follower = tasks.create_task(follow())
            try:
                while not follower.done():
                    await _show(usage, args, out, watching=True)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_REDRAW_SECONDS):
                            await changed.wait()
                    changed.clear()
            finally:
                stream.cancel()
    except ExceptionGroup as group:  # one task besides this one: report its failure as it is
        raise group.exceptions[0] from None


def cmd_metrics_show(args: argparse.Namespace) -> int:
    """Print the dashboard once, or keep it up to date with --watch."""
    settings = load_settings()
    engine_addr = args.engine or settings.engine_addr
    key = read_master_key(settings.tenancy.master_key, settings.data_dir)
    if key is None:
        sys.stderr.write(no_master_key(settings.data_dir) + "\n")
        return 2

    async def run() -> None:
        async with UsageClient(engine_addr, master_key=key) as usage:
            if args.watch:
                await _watch(usage, args, sys.stdout)
            else:
                await _show(usage, args, sys.stdout, watching=False)

    try:
        asyncio.run(run())
    except GatewayCallError as err:
        sys.stderr.write(f"can: the engine at {engine_addr} answered: {err.message}\n")
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `registry metrics show` under `can`."""
    registry = commands.add_parser("registry", help="gateway metrics").add_subparsers(dest="action", required=True)
    metrics = registry.add_parser("metrics", help="usage metrics").add_subparsers(dest="metrics_action", required=True)
    show = metrics.add_parser("show", help="the metrics dashboard (requests, cache, cost, latency, models)")
    show.add_argument("--since", type=_window, default="24h", help="window ending now, e.g. 90m, 24h, 7d (default 24h)")
    show.add_argument("--json", action="store_true", help="the figures as JSON, for scripts")
    show.add_argument("--watch", action="store_true", help="redraw as usage arrives (Ctrl-C stops)")
    show.add_argument("--engine", help="engine address host:port (default: the configured engine_addr)")
    show.set_defaults(func=cmd_metrics_show)
