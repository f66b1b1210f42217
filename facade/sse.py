"""Server-sent events framed exactly as OpenAI frames them."""

from aiohttp import web

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def data_frame(payload: bytes) -> bytes:
    """One `data:` event."""
    return b"data: " + payload + b"\n\n"


def comment_frame(text: bytes) -> bytes:
    """A comment line, ignored by conforming SSE parsers."""
    return text + b"\n\n"


async def start(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    """Send the status line and headers of an event stream."""
    response = web.StreamResponse(status=200, headers={**SSE_HEADERS, **headers})
    await response.prepare(request)
    return response
