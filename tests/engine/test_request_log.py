"""The request log line: one JSON object per request, its fields, and masked secrets."""

import io

import orjson
import pytest
from google.protobuf import timestamp_pb2

from chittycan.v1 import usage_pb2
from engine import request_log
from engine.request_log import RequestLog


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


async def test_one_json_line_per_request() -> None:
    stream = io.StringIO()
    request_log = RequestLog.from_env(stream, {})
    assert request_log is not None
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
    request_log.log(record)
    request_log.log(usage_pb2.UsageRecord(request_id="req_2", http_status=429, error_reason="BUDGET_EXCEEDED"))
    request_log.close()  # lines are written in batches on the log's thread; closing writes what is queued
    first, second = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert first["request_id"] == "sk-live…"
    assert first["tenant"] == "team"
    assert (first["model"], first["provider"], first["operation"]) == ("gpt-4o", "openai", "chat")
    assert (first["status"], first["cache"], first["reason"]) == (200, "miss", "")
    assert first["cost_usd"] == 0.00125
    assert (first["latency_ms"], first["ttft_ms"]) == (12.345, 2.0)
    assert first["ts"] == "2026-01-01T00:00:00Z"
    assert "trace_id" not in first
    assert (second["status"], second["reason"], second["cost_usd"]) == (429, "BUDGET_EXCEEDED", None)


def test_a_line_names_the_span_it_ran_in() -> None:
    line = orjson.loads(request_log.line_from_record(usage_pb2.UsageRecord(request_id="r"), 0xAB, 0xCD))
    assert (line["trace_id"], line["span_id"]) == (f"{0xAB:032x}", f"{0xCD:016x}")


def test_request_log_can_be_switched_off() -> None:
    assert RequestLog.from_env(io.StringIO(), {request_log.REQUEST_LOG_ENV: "off"}) is None


@pytest.mark.parametrize("fraction", [0, 120_000_000, 123_456_000, 123_456_789])
@pytest.mark.parametrize("seconds", [0, 1_795_592_231])
def test_line_time_is_the_records_rfc3339_time(seconds: int, fraction: int) -> None:
    stamp = timestamp_pb2.Timestamp(seconds=seconds, nanos=fraction)
    line = orjson.loads(request_log.line_from_record(usage_pb2.UsageRecord(time=stamp)))
    assert line["ts"] == stamp.ToJsonString()
