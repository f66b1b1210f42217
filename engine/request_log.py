"""The request log: one JSON line per request, written where its usage record is written, secrets masked.

Lines go to the `chittycan.requests` logger; `configure()` (called by `python -m engine`) sends them to stdout as
bare JSON, apart from the human-readable log on stderr. CHITTYCAN_REQUEST_LOG=off switches them off.
"""

import atexit
import contextlib
import logging
import logging.handlers
import os
import queue
import re
import sys
from collections.abc import Mapping
from typing import TextIO

import orjson
from opentelemetry import trace

from chittycan.v1 import usage_pb2
from engine.telemetry import CACHE_NAMES, OPERATION_NAMES

LOGGER_NAME = "chittycan.requests"
REQUEST_LOG_ENV = "CHITTYCAN_REQUEST_LOG"
log = logging.getLogger(LOGGER_NAME)

# Credential shapes: bearer values, provider keys (sk-, sk-ant-, gsk_, xai-), gateway tokens and master keys.
# The first characters are kept, to tell keys apart.
_BEARER = re.compile(r"(?i)\b(bearer\s+)(\S{4})\S+")
_KEY = re.compile(r"\b(sk-(?:ant-|proj-)?|gsk_|xai-|chitty_|chittycan_master_)([A-Za-z0-9_\-]{4})[A-Za-z0-9_\-]+")


def mask_secrets(text: str) -> str:
    """`text` with every credential-shaped substring cut to its prefix and four characters, then `…`."""
    return _KEY.sub(r"\1\2…", _BEARER.sub(r"\1\2…", text))


def line_from_record(record: usage_pb2.UsageRecord) -> bytes:
    """The JSON line of one request (no prompt or completion text: the record has none)."""
    fields: dict[str, object] = {
        "ts": record.time.ToJsonString(),
        "request_id": mask_secrets(record.request_id),
        "tenant": mask_secrets(record.tenant),
        "key_id": mask_secrets(record.key_id),
        "operation": OPERATION_NAMES.get(record.operation, "chat"),
        "model": mask_secrets(record.requested_model),
        "routed_model": record.routed_model,
        "provider": record.provider,
        "status": record.http_status,
        "reason": record.error_reason,
        "cache": CACHE_NAMES.get(record.cache, "none"),
        "cost_usd": record.cost_micros / 1e6 if record.cost_known else None,
        "saved_usd": record.saved_micros / 1e6,
        "latency_ms": record.latency_micros / 1000,
        "ttft_ms": record.ttft_micros / 1000 if record.ttft_micros else None,
        "upstream_ms": record.upstream_micros / 1000,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cancelled": record.cancelled,
    }
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        fields["trace_id"] = format(context.trace_id, "032x")
        fields["span_id"] = format(context.span_id, "016x")
    return orjson.dumps(fields)


def log_request(record: usage_pb2.UsageRecord) -> None:
    """Log one finished request; cheap when the logger is off."""
    if log.isEnabledFor(logging.INFO):
        log.info("%s", line_from_record(record).decode())


def _stop(listener: logging.handlers.QueueListener) -> None:
    """Drain and stop the listener at exit; stopping twice is harmless."""
    with contextlib.suppress(AttributeError):  # QueueListener.stop fails when already stopped
        listener.stop()


def configure(
    stream: TextIO = sys.stdout, environ: Mapping[str, str] | None = None
) -> logging.handlers.QueueListener | None:
    """Send request lines to `stream` as bare JSON lines, and only there (nowhere with CHITTYCAN_REQUEST_LOG=off)."""
    env = os.environ if environ is None else environ
    log.propagate = False
    if env.get(REQUEST_LOG_ENV, "").strip().lower() in {"off", "false", "0", "no"}:
        log.setLevel(logging.CRITICAL + 1)
        return None
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    # The write happens on a listener thread: a slow stdout reader must never stall the event loop.
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    log.addHandler(logging.handlers.QueueHandler(records))
    listener = logging.handlers.QueueListener(records, handler)
    listener.start()
    atexit.register(_stop, listener)
    log.setLevel(logging.INFO)
    return listener
