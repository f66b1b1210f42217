"""Upstreams' rate-limit headers as chittycan.v1 RateLimits: OpenAI's `x-ratelimit-*`, which Groq and other
OpenAI-compatible servers send too (https://platform.openai.com/docs/guides/rate-limits), and Anthropic's
`anthropic-ratelimit-*` (https://docs.anthropic.com/en/api/rate-limits). A value that does not parse is left out."""

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from chittycan.v1 import gateway_pb2

# OpenAI's resets are Go durations: "1s", "6m0s", "17ms", "2m59.56s".
_GO_PART = r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)"
_GO_DURATION = re.compile(f"(?:{_GO_PART})+|0")
_MAX_COUNT = 2**63 - 1
_MAX_RESET_MICROS = 10 * 365 * 86_400_000_000  # beyond ten years is not a reset time
_MICROS_PER = {"h": 3_600_000_000, "m": 60_000_000, "s": 1_000_000, "ms": 1_000, "us": 1, "µs": 1, "ns": 0.001}


def from_openai(headers: Mapping[str, str]) -> gateway_pb2.RateLimits | None:
    """`x-ratelimit-{limit,remaining,reset}-{requests,tokens}`; None when the upstream sent none of them."""
    return _parse(headers, "x-ratelimit-{0}-{1}".format, go_duration_micros)


def from_anthropic(headers: Mapping[str, str], now: float) -> gateway_pb2.RateLimits | None:
    """`anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` (tokens: the most restrictive token limit
    in effect); a reset is an RFC 3339 time, kept as the time left from `now` (unix seconds)."""

    def micros_left(text: str) -> int | None:
        reset_at = _rfc3339(text)
        return None if reset_at is None else max(0, round((reset_at - now) * 1_000_000))

    return _parse(headers, "anthropic-ratelimit-{1}-{0}".format, micros_left)


def _parse(
    headers: Mapping[str, str], name: Callable[[str, str], str], reset_micros: Callable[[str], int | None]
) -> gateway_pb2.RateLimits | None:
    """RateLimits from the headers `name(part, kind)` names (part: limit, remaining, reset; kind: requests, tokens)."""
    limits = gateway_pb2.RateLimits()
    for kind in ("requests", "tokens"):
        for part in ("limit", "remaining"):
            value = headers.get(name(part, kind), "").strip()
            if value.isascii() and value.isdigit() and int(value) <= _MAX_COUNT:
                setattr(limits, f"{part}_{kind}", int(value))
        reset = reset_micros(headers.get(name("reset", kind), ""))
        if reset is not None and reset <= _MAX_RESET_MICROS:
            getattr(limits, f"reset_{kind}").FromMicroseconds(reset)
    return limits if limits.ListFields() else None


def go_duration_micros(text: str) -> int | None:
    """A Go duration string ("6m0s", "17ms", "1.5s") in microseconds; None if it is not one."""
    text = text.strip()
    if not _GO_DURATION.fullmatch(text):
        return None
    return round(sum(float(number) * _MICROS_PER[unit] for number, unit in re.findall(_GO_PART, text)))


def _rfc3339(text: str) -> float | None:
    """Unix seconds of an RFC 3339 time (UTC when it names no offset); None if it is not one."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
