"""Plain HTTP from sync tests (stdlib urllib), for checking raw status codes, headers and bytes."""

import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from typing import Any

import orjson


@dataclass
class RawResponse:
    """Status, headers and body of one response."""

    status_code: int
    headers: Message
    content: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return orjson.loads(self.content)

    @property
    def text(self) -> str:
        """The body as text."""
        return self.content.decode()


def request(
    method: str, url: str, *, json: Any = None, content: bytes | None = None, headers: dict[str, str] | None = None
) -> RawResponse:
    """Send one request; error statuses are returned, not raised."""
    data = orjson.dumps(json) if json is not None else content
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, headers=all_headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return RawResponse(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as err:
        return RawResponse(err.code, err.headers, err.read())


def post(url: str, **kwargs: Any) -> RawResponse:
    """POST."""
    return request("POST", url, **kwargs)


def get(url: str, **kwargs: Any) -> RawResponse:
    """GET."""
    return request("GET", url, **kwargs)
