"""Wire pieces shared by the scripted upstreams: recorded requests, replies, ids, words and JSON rendering."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
# Flat token charge for an image part, so image requests count deterministically without decoding pixels.
IMAGE_TOKENS = 85


@dataclass
class RecordedRequest:
    """One request as the upstream received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    json: Any  # the parsed body, or None when it is empty or not JSON
    raw: bytes


@dataclass(frozen=True)
class Reply:
    """A response to send: status, headers and body chunks, each chunk written separately when streamed."""

    status: int
    chunks: list[bytes]
    headers: dict[str, str] = field(default_factory=dict)
    stream: bool = False


def json_reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> Reply:
    """A single JSON body."""
    return Reply(status, [body], {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})})


def sse_reply(frames: list[bytes], headers: dict[str, str] | None = None) -> Reply:
    """A 200 event stream, one frame per write."""
    base = {"Content-Type": SSE_CONTENT_TYPE, "Cache-Control": "no-cache"}
    return Reply(200, frames, {**base, **(headers or {})}, stream=True)


def is_sse(body: bytes) -> bool:
    """Whether a raw body is an SSE transcript rather than a JSON document."""
    return body.lstrip().startswith((b"data:", b"event:", b":"))


def split_frames(body: bytes) -> list[bytes]:
    """Split an SSE transcript into frames, each keeping its blank-line terminator."""
    return [frame for frame in re.split(rb"(?<=\n\n)", body) if frame]


def hex_id(seed: bytes, length: int, salt: str = "") -> str:
    """Deterministic hex id: the same request always gets the same ids."""
    return hashlib.sha256(salt.encode() + seed).hexdigest()[:length]


def pretty_json(obj: Any, indent: int = 2) -> bytes:
    """Indented JSON; OpenAI renders answers with 2 spaces and errors with 4."""
    out = orjson.dumps(obj, option=orjson.OPT_INDENT_2)
    if indent == 4:
        # JSON strings cannot hold a raw newline, so every leading run of spaces is indentation.
        out = re.sub(rb"(?m)^( +)", lambda m: m.group(1) * 2, out)
    return out


def text_of(content: Any) -> str:
    """The text in an OpenAI or Anthropic content value: a string, a list of parts, or nothing."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (text_of(part.get("text") or part.get("content")) for part in content if isinstance(part, dict))
        return " ".join(text for text in texts if text)
    return ""


def count_images(content: Any) -> int:
    """Image parts in a content list (OpenAI `image_url`, Anthropic `image` and `document`)."""
    if not isinstance(content, list):
        return 0
    kinds = {"image_url", "image", "document", "input_image"}
    return sum(1 for part in content if isinstance(part, dict) and part.get("type") in kinds)


def answer_pieces(text: str, limit: Any) -> tuple[list[str], bool]:
    """Split an answer into word tokens (leading space, as real tokens), cut to `limit`; True if cut."""
    words = text.split()
    truncated = isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < len(words)
    if truncated:
        words = words[:limit]
    return [word if i == 0 else " " + word for i, word in enumerate(words)], truncated
