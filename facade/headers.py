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
# OpenAI's own: the API version whose wire format is served, and the time the request took to process (ms).
OPENAI_VERSION = "openai-version"
OPENAI_VERSION_VALUE = "2020-10-01"
PROCESSING_MS = "openai-processing-ms"
# RateLimits fields as OpenAI's headers (https://platform.openai.com/docs/guides/rate-limits).
RATE_LIMITS = {
    f"{name}_{kind}": f"x-ratelimit-{name}-{kind}"
    for name in ("limit", "remaining", "reset")
    for kind in ("requests", "tokens")
}

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
    elapsed_ms = (time.perf_counter() - started) * 1000
    out[OVERHEAD_MS] = f"{max(0.0, elapsed_ms - meta.upstream_micros / 1000):.3f}"
    out[PROCESSING_MS] = str(round(elapsed_ms))
    out[OPENAI_VERSION] = OPENAI_VERSION_VALUE
    if meta.cache == usage_pb2.CACHE_STATUS_HIT:
        out[AGE] = str(meta.age_seconds)
    if meta.tenant:
        out[TENANT] = meta.tenant
    if meta.HasField("budget_remaining_micros"):
        out[BUDGET_REMAINING] = format_usd(meta.budget_remaining_micros)
    if meta.HasField("rate_limits"):
        out.update(rate_limit_headers(meta.rate_limits))
    return out


def rate_limit_headers(limits: gateway_pb2.RateLimits) -> dict[str, str]:
    """An upstream's limits as OpenAI's x-ratelimit-* headers, whichever upstream it was."""
    return {
        RATE_LIMITS[field.name]: go_duration(value.ToMicroseconds()) if field.message_type else str(value)
        for field, value in limits.ListFields()
    }


def go_duration(micros: int) -> str:
    """A duration as OpenAI spells its resets (Go's format: "6m0s", "1.5s", "17ms"), in ASCII: "0.5ms", not "500µs"."""
    if micros <= 0:
        return "0s"
    if micros < 1_000_000:
        return f"{_trimmed(micros / 1000)}ms"
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds = f"{_trimmed(rest / 1_000_000)}s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    return f"{minutes}m{seconds}" if minutes else seconds


def _trimmed(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")
