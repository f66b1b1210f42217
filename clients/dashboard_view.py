"""The dashboard for people and scripts: the playbook's box layout, and a JSON document of the same figures."""

import math
from typing import Any

from google.protobuf import duration_pb2

from chittycan.v1 import observability_pb2

_INNER = 52  # text columns between "│ " and "│" in the playbook's box
_LABEL = 23  # column where the values start
PERCENTILE_METHOD = "exact: nearest rank over every answered request (HTTP status < 400) in the window"


def usd(micros: float, places: int) -> str:
    """`$` and `places` decimals, or two significant digits when `places` would show a non-zero amount as zero."""
    amount = micros / 1e6
    if micros and round(amount, places) == 0:
        return f"${amount:.{1 - math.floor(math.log10(abs(amount)))}f}"
    return f"${amount:,.{places}f}"


def milliseconds(micros: int) -> str:
    """A latency in whole milliseconds, with one decimal below 10 ms."""
    ms = micros / 1000
    return f"{ms:.1f}ms" if ms < 10 else f"{ms:,.0f}ms"


def _ratio(part: float, whole: int) -> float:
    return part / whole if whole else 0.0


def _micros(duration: duration_pb2.Duration) -> int:
    return duration.ToMicroseconds()


def render_box(figures: observability_pb2.Dashboard, window: str) -> str:
    """The playbook's `can registry metrics show` box, then the month's cache savings line."""
    requests = figures.requests
    rows: list[str | None] = [
        f"ChittyCan Proxy Metrics (Last {window})",
        None,
        f"{'Total Requests:':<{_LABEL}}{requests:,}",
        f"{'Cache Hit Rate:':<{_LABEL}}{100 * _ratio(figures.cache_hits, requests):.1f}%",
        f"{'Total Cost:':<{_LABEL}}{usd(figures.cost_micros, 2)}",
        f"{'Cost per Request:':<{_LABEL}}{usd(_ratio(figures.cost_micros, requests), 3)} avg",
        f"{'':<{_LABEL}}{usd(_ratio(figures.uncached_cost_micros, figures.uncached_requests), 3)} uncached",
        f"{'':<{_LABEL}}{usd(_ratio(figures.cached_cost_micros, figures.cache_hits), 3)} cached",
        None,
        "Latency:",
    ]
    latency = figures.latency
    for name, value in (("P50", latency.p50), ("P95", latency.p95), ("P99", latency.p99)):
        rows.append(f"  {name}:  {milliseconds(_micros(value)) if latency.samples else 'n/a'}")
    rows += [None, "Model Distribution:"]
    for model in figures.models:
        share = f"{100 * _ratio(model.requests, requests):.0f}%"
        noun = "request" if model.requests == 1 else "requests"
        rows.append(f"  {model.model + ':':<{_LABEL - 3}} {share} ({model.requests:,} {noun})")
    if not figures.models:
        rows.append("  (no requests)")
    width = max(_INNER, *(len(row) for row in rows if row is not None))
    rule = "─" * (width + 1)
    lines = [f"┌{rule}┐"]
    lines += [f"├{rule}┤" if row is None else f"│ {row:<{width}}│" for row in rows]
    lines += [f"└{rule}┘", "", f"Cost Savings: {usd(figures.month_saved_micros, 2)} this month (cache hits)"]
    return "\n".join(lines) + "\n"


def figures_to_json(figures: observability_pb2.Dashboard, window: str) -> dict[str, Any]:
    """The same figures for scripts: exact integers (micro-USD, counts) next to derived USD amounts and ratios."""
    requests = figures.requests
    latency = figures.latency
    return {
        "window": {"label": window, "since": figures.since.ToJsonString(), "until": figures.until.ToJsonString()},
        "total_requests": requests,
        "cache_hits": figures.cache_hits,
        "uncached_requests": figures.uncached_requests,
        "errors": figures.errors,
        "cache_hit_rate": _ratio(figures.cache_hits, requests),
        "total_cost_micros": figures.cost_micros,
        "total_cost_usd": figures.cost_micros / 1e6,
        "cost_per_request_usd": {
            "avg": _ratio(figures.cost_micros, requests) / 1e6,
            "uncached": _ratio(figures.uncached_cost_micros, figures.uncached_requests) / 1e6,
            "cached": _ratio(figures.cached_cost_micros, figures.cache_hits) / 1e6,
        },
        "latency_ms": {
            "p50": _micros(latency.p50) / 1000,
            "p95": _micros(latency.p95) / 1000,
            "p99": _micros(latency.p99) / 1000,
            "samples": latency.samples,
            "method": PERCENTILE_METHOD,
        },
        "models": [
            {"model": m.model, "requests": m.requests, "share": _ratio(m.requests, requests)} for m in figures.models
        ],
        "tokens": {"prompt": figures.prompt_tokens, "completion": figures.completion_tokens},
        "cost_saved_micros": figures.saved_micros,
        "cost_saved_usd": figures.saved_micros / 1e6,
        "month_cost_saved_micros": figures.month_saved_micros,
        "month_cost_saved_usd": figures.month_saved_micros / 1e6,
    }
