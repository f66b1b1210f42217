"""HTTP header names the gateway reads and writes (each defined once), and ResponseMeta rendered as headers."""

import time

from chittycan.v1 import gateway_pb2, usage_pb2

REQUEST_ID = "x-request-id"
CACHE = "X-ChittyCan-Cache"
COST = "X-ChittyCan-Cost"
MODEL = "X-ChittyCan-Model"
OVERHEAD_MS = "X-ChittyCan-Overhead-Ms"
TENANT = "X-ChittyCan-Tenant"
BUDGET_REMAINING = "X-ChittyCan-Budget-Remaining"
CACHE_STATUS = "Cache-Status"
AGE = "Age"
COST_COMMENT = b": x-chittycan-cost "

_CACHE_NAMES = {
    usage_pb2.CACHE_STATUS_HIT: "HIT",
    usage_pb2.CACHE_STATUS_MISS: "MISS",
    usage_pb2.CACHE_STATUS_BYPASS: "BYPASS",
}
# RFC 9211 Cache-Status values, with this cache's name.
_CACHE_STATUS = {
    usage_pb2.CACHE_STATUS_HIT: "ChittyCan; hit",
    usage_pb2.CACHE_STATUS_MISS: "ChittyCan; fwd=miss",
    usage_pb2.CACHE_STATUS_BYPASS: "ChittyCan; fwd=bypass",
}


def format_usd(micros: int) -> str:
    """Micro-USD as a USD amount with six decimals."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


def from_meta(meta: gateway_pb2.ResponseMeta, *, final: bool, started: float) -> dict[str, str]:
    """X-ChittyCan-* and cache headers. A stream's headers go out before its cost is known (`final=False`):
    then the cost header is left out unless already known, and the cost follows in the stream.

    X-ChittyCan-Overhead-Ms is the gateway's own time: since the facade took the request (`started`, a
    `time.perf_counter()` reading) minus what the engine spent waiting for upstreams.
    """
    out: dict[str, str] = {}
    if meta.cache in _CACHE_NAMES:
        out[CACHE] = _CACHE_NAMES[meta.cache]
        out[CACHE_STATUS] = _CACHE_STATUS[meta.cache]
    if meta.HasField("cost_micros"):
        out[COST] = format_usd(meta.cost_micros)
    elif final:
        out[COST] = "unknown"
    if meta.model:
        out[MODEL] = meta.model
    overhead_ms = (time.perf_counter() - started) * 1000 - meta.upstream_micros / 1000
    out[OVERHEAD_MS] = f"{max(0.0, overhead_ms):.3f}"
    if meta.cache == usage_pb2.CACHE_STATUS_HIT:
        out[AGE] = str(meta.age_seconds)
    if meta.tenant:
        out[TENANT] = meta.tenant
    if meta.HasField("budget_remaining_micros"):
        out[BUDGET_REMAINING] = format_usd(meta.budget_remaining_micros)
    return out
