"""Server-sent events parsing for upstream streams (https://html.spec.whatwg.org/multipage/server-sent-events.html)."""

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: its `event:` name (empty when absent) and its joined `data:` lines."""

    event: str
    data: bytes


async def iter_sse_events(lines: AsyncIterable[bytes]) -> AsyncIterator[SseEvent]:
    """Yield events from a body's lines (split at "\\n") as their terminating blank line arrives; comments and
    unknown fields are skipped."""
    event = ""
    data: list[bytes] = []
    async for raw in lines:
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
