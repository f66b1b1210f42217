"""Rate-limit headers, table by table: OpenAI's and Anthropic's into RateLimits, and back out as OpenAI spells them."""

import pytest

from engine.providers.rate_limits import from_anthropic, from_openai, go_duration_micros
from facade.headers import go_duration

NOW = 1_796_515_200.0  # 2026-12-06T00:00:00Z


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("0s", 0),
        ("0", 0),
        ("6ms", 6_000),
        ("0.5ms", 500),
        ("1s", 1_000_000),
        ("8.64s", 8_640_000),
        ("6m0s", 360_000_000),
        ("2m59.56s", 179_560_000),
        ("1h0m0s", 3_600_000_000),
        ("1h2m3.5s", 3_723_500_000),
        ("250us", 250),
    ],
)
def test_go_durations_parse_and_print_back(text: str, micros: int) -> None:
    assert go_duration_micros(text) == micros
    assert go_duration_micros(go_duration(micros)) == micros
    if text not in ("0", "250us"):  # Go prints "0s"; "250us" is printed in ASCII milliseconds
        assert go_duration(micros) == text


@pytest.mark.parametrize("text", ["", "5", "s", "1x", "abc", "-1s", "1s2", "1 s"])
def test_what_is_not_a_go_duration(text: str) -> None:
    assert go_duration_micros(text) is None


def test_openai_headers() -> None:
    limits = from_openai(  # as Groq sends them
        {
            "x-ratelimit-limit-requests": "14400",
            "x-ratelimit-limit-tokens": "18000",
            "x-ratelimit-remaining-requests": "14399",
            "x-ratelimit-remaining-tokens": "17997",
            "x-ratelimit-reset-requests": "6s",
            "x-ratelimit-reset-tokens": "7.66s",
        }
    )
    assert limits is not None
    assert (limits.limit_requests, limits.limit_tokens) == (14400, 18000)
    assert (limits.remaining_requests, limits.remaining_tokens) == (14399, 17997)
    assert limits.reset_requests.ToMicroseconds() == 6_000_000
    assert limits.reset_tokens.ToMicroseconds() == 7_660_000


def test_openai_headers_partial_garbled_or_absent() -> None:
    limits = from_openai({"x-ratelimit-remaining-tokens": "12", "x-ratelimit-limit-requests": "lots",
                          "x-ratelimit-reset-requests": "soon"})  # fmt: skip
    assert limits is not None
    assert [f.name for f, _ in limits.ListFields()] == ["remaining_tokens"]
    assert from_openai({"content-type": "application/json"}) is None
    for garbled in ("-1", "²", "1e3", "99999999999999999999", ""):
        assert from_openai({"x-ratelimit-limit-requests": garbled}) is None, garbled
    assert from_openai({"x-ratelimit-reset-tokens": "99999999999h"}) is None


def test_anthropic_headers() -> None:
    limits = from_anthropic(
        {
            "anthropic-ratelimit-requests-limit": "4000",
            "anthropic-ratelimit-requests-remaining": "3999",
            "anthropic-ratelimit-requests-reset": "2026-12-06T00:00:01Z",
            "anthropic-ratelimit-tokens-limit": "800000",
            "anthropic-ratelimit-tokens-remaining": "799950",
            "anthropic-ratelimit-tokens-reset": "2026-12-06T00:06:00+00:00",
        },
        NOW,
    )
    assert limits is not None
    assert (limits.limit_requests, limits.remaining_requests) == (4000, 3999)
    assert (limits.limit_tokens, limits.remaining_tokens) == (800000, 799950)
    assert go_duration(limits.reset_requests.ToMicroseconds()) == "1s"
    assert go_duration(limits.reset_tokens.ToMicroseconds()) == "6m0s"


def test_anthropic_reset_in_the_past_or_unreadable() -> None:
    limits = from_anthropic(
        {"anthropic-ratelimit-requests-reset": "2026-12-05T23:59:00Z", "anthropic-ratelimit-tokens-reset": "later"},
        NOW,
    )
    assert limits is not None
    assert limits.HasField("reset_requests")
    assert limits.reset_requests.ToMicroseconds() == 0
    assert not limits.HasField("reset_tokens")
    assert from_anthropic({"x-ratelimit-limit-requests": "1"}, NOW) is None
