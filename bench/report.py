"""Renders cells as one table per scenario, the targets of issue 7 against what was measured, and the JSON file."""

import sys
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from bench.measure import Cell
from bench.scenarios import SCENARIOS


def say(text: str) -> None:
    """Print a line of progress or results at once (the benchmarks run for minutes)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


_PLAIN = [
    ("req/s", 9),
    ("p50", 7),
    ("p95", 7),
    ("p99", 7),
    ("+p50", 7),
    ("+p95", 7),
    ("+p99", 7),
]
_STREAM = [
    ("req/s", 9),
    ("ttfb50", 7),
    ("ttfb99", 7),
    ("tot50", 7),
    ("tot99", 7),
    ("+ttfb50", 7),
    ("+ttfb99", 7),
    ("+tot50", 7),
]
_TAIL = [
    ("cpu s/1k", 8),
    ("rss MB", 7),
    ("peak MB", 7),
    ("err", 5),
    ("gen", 6),
    ("load%", 5),
    ("other%", 6),
    ("up req", 7),
]


def _fmt(value: float | int | str | None, width: int) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, float):
        text = f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 0.01 else f"{value:.2f}"
    else:
        text = str(value)
    return text.rjust(width)


def _added(cell: Cell, direct: Cell | None, name: str) -> float | None:
    if direct is None or cell.target == "direct":
        return None
    mine, base = getattr(cell, name), getattr(direct, name)
    return None if mine is None or base is None else round(mine - base, 3)


def _row(cell: Cell, direct: Cell | None, stream: bool) -> list[float | int | str | None]:
    if stream:
        values: list[float | int | str | None] = [
            cell.rps,
            cell.ttfb_p50,
            cell.ttfb_p99,
            cell.p50,
            cell.p99,
            _added(cell, direct, "ttfb_p50"),
            _added(cell, direct, "ttfb_p99"),
            _added(cell, direct, "p50"),
        ]
    else:
        values = [cell.rps, cell.p50, cell.p95, cell.p99]
        values += [_added(cell, direct, n) for n in ("p50", "p95", "p99")]
    return [*values, cell.cpu_s_per_1k, cell.rss_mb, cell.peak_rss_mb, cell.errors, cell.generator]


def table(name: str, cells: list[Cell]) -> str:
    """One scenario's table; latencies in ms, `+` columns are the target minus direct at the same concurrency."""
    scenario = SCENARIOS[name]
    columns = (_STREAM if scenario.stream else _PLAIN) + _TAIL
    header = "target".ljust(8) + "conc".rjust(5) + "".join(title.rjust(width + 1) for title, width in columns)
    lines = [f"== {name}: {scenario.title} (ms) ==", header]
    direct = {c.concurrency: c for c in cells if c.target == "direct"}
    for cell in cells:
        values = [*_row(cell, direct.get(cell.concurrency), scenario.stream), cell.client_cpu_pct]
        values += [cell.other_cpu_pct, cell.upstream_requests]
        text = "".join(" " + _fmt(v, width) for v, (_, width) in zip(values, columns, strict=True))
        lines.append(cell.target.ljust(8) + str(cell.concurrency).rjust(5) + text)
        if cell.first_error:
            lines.append(f"    first error: {cell.first_error[:200]}")
    return "\n".join(lines)


def _find(cells: Iterable[Cell], scenario: str, target: str, concurrency: int) -> Cell | None:
    return next(
        (c for c in cells if (c.scenario, c.target, c.concurrency) == (scenario, target, concurrency)),
        None,
    )


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def per_chunk_us(cells: list[Cell], short_chunks: int, long_chunks: int) -> float | None:
    """Gateway time per streamed chunk: the slope of added total latency between a short and a long stream (c=1)."""
    found = [_find(cells, s, t, 1) for s in ("stream", "stream_long") for t in ("direct", "gateway")]
    if any(c is None for c in found) or long_chunks == short_chunks:
        return None
    d_short, g_short, d_long, g_long = (c.p50 for c in found if c is not None)
    slope = ((g_long - d_long) - (g_short - d_short)) / (long_chunks - short_chunks)
    return round(slope * 1000, 1)


def summary(cells: list[Cell], short_chunks: int, long_chunks: int) -> dict[str, Any]:
    """Issue 7's and issue 3's targets next to what this run measured (None where a cell was not run)."""

    def get(scenario: str, target: str, concurrency: int, attr: str) -> float | None:
        cell = _find(cells, scenario, target, concurrency)
        value = None if cell is None else getattr(cell, attr)
        return None if value is None else float(value)

    gw32, ll32 = get("chat", "gateway", 32, "rps"), get("chat", "litellm", 32, "rps")
    direct32 = get("chat", "direct", 32, "rps")
    rows: dict[str, Any] = {
        "uncached added p50 c=1 ms (<= 1)": _diff(get("chat", "gateway", 1, "p50"), get("chat", "direct", 1, "p50")),
        "uncached added p99 c=1 ms (<= 3)": _diff(get("chat", "gateway", 1, "p99"), get("chat", "direct", 1, "p99")),
        "cache hit added p50 c=1 ms (<= 0.5)": _diff(
            get("chat_hit", "gateway", 1, "p50"), get("chat_hit", "direct", 1, "p50")
        ),
        "cache hit p95 c=1 ms at the gateway (< 1, issue 3)": get("chat_hit", "gateway", 1, "p95"),
        "cache hit req/s c=32 (>= 3000)": get("chat_hit", "gateway", 32, "rps"),
        "uncached req/s c=32": gw32,
        "uncached req/s c=32 / direct (aim 0.25)": None if not gw32 or not direct32 else round(gw32 / direct32, 3),
        "uncached req/s c=32 / LiteLLM (>= 10)": None if not gw32 or not ll32 else round(gw32 / ll32, 1),
        "stream TTFB added p50 c=1 ms (<= 1)": _diff(
            get("stream", "gateway", 1, "ttfb_p50"), get("stream", "direct", 1, "ttfb_p50")
        ),
        "stream per-chunk overhead us (<= 50)": per_chunk_us(cells, short_chunks, long_chunks),
    }
    if ll32 is not None:
        rows["LiteLLM uncached added p50 c=1 ms"] = _diff(
            get("chat", "litellm", 1, "p50"), get("chat", "direct", 1, "p50")
        )
        rows["LiteLLM cache hit added p50 c=1 ms"] = _diff(
            get("chat_hit", "litellm", 1, "p50"), get("chat_hit", "direct", 1, "p50")
        )
        rows["LiteLLM stream TTFB added p50 c=1 ms"] = _diff(
            get("stream", "litellm", 1, "ttfb_p50"), get("stream", "direct", 1, "ttfb_p50")
        )
    return rows


def summary_text(rows: dict[str, Any]) -> str:
    """The summary as aligned lines."""
    width = max(len(k) for k in rows)
    return "== targets (issue 7 / issue 3) ==\n" + "\n".join(
        f"{k.ljust(width)}  {'-' if v is None else v}" for k, v in rows.items()
    )


def write_json(path: Path, meta: dict[str, Any], cells: list[Cell], rows: dict[str, Any]) -> None:
    """The whole run as JSON."""
    data = {"meta": meta, "summary": rows, "cells": [asdict(c) for c in cells]}
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
