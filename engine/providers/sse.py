"""Server-sent events parsing for upstream streams (https://html.spec.whatwg.org/multipage/server-sent-events.html)."""

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: its `event:` name (empty when absent) and its joined `data:` lines."""

    event: str
    data: bytes


async def iter_sse_events(content: aiohttp.StreamReader) -> AsyncIterator[SseEvent]:
    """Yield events as their terminating blank line arrives; comments and unknown fields are skipped."""
    event = ""
    data: list[bytes] = []
    async for raw in content:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield SseEvent(event, b"\n".join(data))
            event, data = "", []
            continue
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode()
    if data:
        yield SseEvent(event, b"\n".join(data))
