"""The benchmark's scenarios: what each sends to each target (direct upstream, ChittyCan, LiteLLM)."""

from dataclasses import dataclass

import orjson

from bench.load import Request

MESSAGES = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Say something about foxes and dogs in twenty words."},
]
# LiteLLM runs with its in-memory cache on (to measure its hits); uncached scenarios opt out per request, as
# ChittyCan's do with temperature 0.7 or `Cache-Control: no-store`.
_LITELLM_NO_CACHE = {"cache": {"no-cache": True, "no-store": True}}
TARGETS = ("direct", "gateway", "litellm")


@dataclass(frozen=True)
class Scenario:
    """One table: a request shape, whether it streams, whether it is warmed into the cache first."""

    name: str
    title: str
    path: str
    body: dict[str, object]
    stream: bool = False
    cached: bool = False
    no_store_header: bool = False
    concurrencies: tuple[int, ...] | None = None

    def request(self, target: str, base_url: str, api_key: str) -> Request:
        """What `target` is sent; only the opt-outs of each cache differ between targets."""
        body = dict(self.body)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
        if target == "litellm" and not self.cached:
            body.update(_LITELLM_NO_CACHE)
        if target == "gateway" and self.no_store_header:
            headers["Cache-Control"] = "no-store"
        return Request(f"{base_url}{self.path}", orjson.dumps(body), headers, stream=self.stream)


def _chat(temperature: float, **extra: object) -> dict[str, object]:
    return {"model": "gpt-4o", "messages": MESSAGES, "temperature": temperature, **extra}


_STREAM = {"stream": True, "stream_options": {"include_usage": True}}
_EMBED: dict[str, object] = {"model": "text-embedding-3-small", "input": "The quick brown fox jumps over the lazy dog"}

SCENARIOS = {
    s.name: s
    for s in (
        Scenario("chat", "chat, non-stream, uncached (temperature 0.7)", "/v1/chat/completions", _chat(0.7)),
        Scenario(
            "chat_hit",
            "chat, non-stream, cache hit (temperature 0, warmed)",
            "/v1/chat/completions",
            _chat(0),
            cached=True,
        ),
        Scenario("stream", "chat, stream, uncached", "/v1/chat/completions", _chat(0.7, **_STREAM), stream=True),
        Scenario(
            "stream_hit",
            "chat, stream, cache hit (replayed as SSE)",
            "/v1/chat/completions",
            _chat(0, **_STREAM),
            stream=True,
            cached=True,
        ),
        Scenario(
            "stream_long",
            "chat, stream of 200 chunks, uncached (per-chunk overhead)",
            "/v1/chat/completions",
            _chat(0.7, max_tokens=200, **_STREAM),
            stream=True,
            concurrencies=(1,),
        ),
        Scenario("embed", "embeddings (1 input), uncached (no-store)", "/v1/embeddings", _EMBED, no_store_header=True),
        Scenario("embed_hit", "embeddings (1 input), cache hit", "/v1/embeddings", _EMBED, cached=True),
    )
}
DEFAULT_SCENARIOS = ("chat", "chat_hit", "stream", "stream_long", "embed")
