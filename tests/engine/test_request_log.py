"""The request log line: one JSON object per request, its fields, and masked secrets."""

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
from google.protobuf import timestamp_pb2

from chittycan.v1 import usage_pb2
from engine import request_log


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Bearer sk-abcdefghijklmnop", "Bearer sk-a…"),
        ("key sk-ant-api03-abcdefgh in text", "key sk-ant-api0… in text"),
        ("sk-proj-abcdefghijkl", "sk-proj-abcd…"),
        ("chitty_abcdef123456", "chitty_abcd…"),
        ("gsk_1234567890", "gsk_1234…"),
        ("req_0123456789abcdef", "req_0123456789abcdef"),
        ("key:3f2a9c0d11aa22bb", "key:3f2a9c0d11aa22bb"),
    ],
)
def test_mask_secrets(text: str, expected: str) -> None:
    assert request_log.mask_secrets(text) == expected


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Where the request log goes; the logger is restored afterwards."""
    logger = logging.getLogger(request_log.LOGGER_NAME)
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield io.StringIO()
    logger.handlers[:], logger.level, logger.propagate = saved


def test_one_json_line_per_request(stream: io.StringIO) -> None:
    listener = request_log.configure(stream, {})
    assert listener is not None
    record = usage_pb2.UsageRecord(
        request_id="sk-live-leaked-as-request-id-0001",
        time=timestamp_pb2.Timestamp(seconds=1_767_225_600),
        tenant="team",
        requested_model="gpt-4o",
        routed_model="gpt-4o",
        provider="openai",
        operation=usage_pb2.OPERATION_STREAM_CHAT,
        http_status=200,
        cache=usage_pb2.CACHE_STATUS_MISS,
        cost_micros=1250,
        cost_known=True,
        latency_micros=12_345,
        ttft_micros=2_000,
        prompt_tokens=10,
        completion_tokens=3,
    )
    request_log.log_request(record)
    request_log.log_request(usage_pb2.UsageRecord(request_id="req_2", http_status=429, error_reason="BUDGET_EXCEEDED"))
    listener.stop()  # lines are written on the listener's thread; stopping drains them
    first, second = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert first["request_id"] == "sk-live…"
    assert first["tenant"] == "team"
    assert (first["model"], first["provider"], first["operation"]) == ("gpt-4o", "openai", "chat")
    assert (first["status"], first["cache"], first["reason"]) == (200, "miss", "")
    assert first["cost_usd"] == 0.00125
    assert (first["latency_ms"], first["ttft_ms"]) == (12.345, 2.0)
    assert first["ts"] == "2026-01-01T00:00:00Z"
    assert (second["status"], second["reason"], second["cost_usd"]) == (429, "BUDGET_EXCEEDED", None)


def test_request_log_can_be_switched_off(stream: io.StringIO) -> None:
    request_log.configure(stream, {request_log.REQUEST_LOG_ENV: "off"})
    request_log.log_request(usage_pb2.UsageRecord(request_id="req_1"))
    assert stream.getvalue() == ""
