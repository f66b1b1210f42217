"""LMDB response cache: keys from the canonical request, entries as serialized CacheEntry protos, FIFO eviction."""

import hashlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from chittycan.v1 import cache_pb2, completion_pb2, embedding_pb2, gateway_pb2
from engine.routing import Route
from engine.store import Store, StoreWriter

CACHE_MODES = ("off", "deterministic", "all")
_TOTAL = b"bytes"


@dataclass(frozen=True, slots=True)
class CacheDecision:
    """Whether to look an answer up and whether to store a fresh one."""

    lookup: bool
    store: bool


_NEITHER = CacheDecision(False, False)


class CachePolicy:
    """Deployment policy (off / deterministic / all) combined with the client's Cache-Control."""

    def __init__(self, mode: str) -> None:
        if mode not in CACHE_MODES:
            raise ValueError(f"cache.mode must be one of {CACHE_MODES}, not {mode!r}")
        self._mode = mode

    def for_chat(self, request: completion_pb2.ChatRequest, options: gateway_pb2.CallOptions) -> CacheDecision:
        """Deterministic means temperature 0 or a seed; n > 1 is cached only under mode `all`."""
        if self._mode == "off":
            return _NEITHER
        if self._mode == "deterministic":
            deterministic = (request.HasField("temperature") and request.temperature == 0) or request.HasField("seed")
            if not deterministic or request.n > 1:
                return _NEITHER
        return _with_options(options)

    def for_embedding(self, options: gateway_pb2.CallOptions) -> CacheDecision:
        """Embeddings are deterministic: cached unless the deployment turned the cache off."""
        return _NEITHER if self._mode == "off" else _with_options(options)


def _with_options(options: gateway_pb2.CallOptions) -> CacheDecision:
    if options.cache_mode == gateway_pb2.CACHE_MODE_NO_STORE:
        return _NEITHER
    if options.cache_mode == gateway_pb2.CACHE_MODE_NO_CACHE:
        return CacheDecision(False, True)
    return CacheDecision(True, True)


def chat_cache_key(scope: str, route: Route, request: completion_pb2.ChatRequest) -> bytes:
    """Hash of what can change the answer: scope, provider, upstream model and the request minus client labels.

    `user`, `metadata`, `stream`, `stream_options` and `store` do not change the answer and are left out; free-form
    JSON (schemas, extras) is re-serialized with sorted keys so key order never changes the key.
    """
    canonical = completion_pb2.ChatRequest()
    canonical.CopyFrom(request)
    for name in ("user", "metadata", "stream", "stream_options", "store", "model"):
        canonical.ClearField(name)
    for tool in canonical.tools:
        tool.parameters_json = _sorted_json(tool.parameters_json)
    if canonical.response_format.json_schema.schema_json:
        fmt = canonical.response_format.json_schema
        fmt.schema_json = _sorted_json(fmt.schema_json)
    canonical.extra_json = _sorted_json(canonical.extra_json)
    return _digest(b"chat", scope, route, canonical.SerializeToString(deterministic=True))


def embedding_cache_key(scope: str, route: Route, request: embedding_pb2.EmbeddingRequest) -> bytes:
    """Hash of the embedding request minus `user`."""
    canonical = embedding_pb2.EmbeddingRequest()
    canonical.CopyFrom(request)
    canonical.ClearField("user")
    canonical.ClearField("model")
    canonical.extra_json = _sorted_json(canonical.extra_json)
    return _digest(b"embed", scope, route, canonical.SerializeToString(deterministic=True))


def _sorted_json(raw: bytes) -> bytes:
    return orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS) if raw else b""


def _digest(kind: bytes, scope: str, route: Route, body: bytes) -> bytes:
    digest = hashlib.sha256(kind)
    for part in (scope, route.provider, route.upstream_model):
        encoded = part.encode()
        digest.update(struct.pack(">I", len(encoded)) + encoded)
    digest.update(body)
    return digest.digest()


class ResponseCache:
    """Reads on the event loop (a read transaction is a memory-mapped lookup); writes through the StoreWriter.

    An entry queued but not yet committed is served from memory, so the call right after a miss is a hit even
    before the batched write lands. The byte total of all entries is kept in the same transactions as the
    entries, so several processes agree on it; past `max_bytes` the oldest entries are evicted first.
    """

    def __init__(
        self,
        store: Store,
        writer: StoreWriter,
        *,
        ttl_seconds: int,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._env = store.env
        self._entries = store.db("cache")
        self._order = store.db("cache_order")
        self._meta = store.db("cache_meta")
        self._writer = writer
        self._ttl = ttl_seconds
        self._max_bytes = max_bytes
        self._clock = clock
        self._pending: dict[bytes, cache_pb2.CacheEntry] = {}

    def get(self, key: bytes) -> cache_pb2.CacheEntry | None:
        """The fresh entry under `key`, or None."""
        entry = self._pending.get(key)
        if entry is None:
            with self._env.begin(db=self._entries, buffers=True) as txn:
                raw = txn.get(key)
                if raw is None:
                    return None
                entry = cache_pb2.CacheEntry.FromString(bytes(raw))
        return entry if entry.expires_unix > self._clock() else None

    def put(self, key: bytes, entry: cache_pb2.CacheEntry) -> None:
        """Queue `entry` for storage under `key` (stamped with its creation and expiry times)."""
        now = int(self._clock())
        entry.created_unix = now
        entry.expires_unix = now + self._ttl
        value = entry.SerializeToString()
        self._pending[key] = entry

        def committed() -> None:
            if self._pending.get(key) is entry:  # a newer put of the same key keeps its own entry
                del self._pending[key]

        self._writer.submit(lambda txn: self._write(txn, key, value, now), committed)

    async def flush(self) -> None:
        """Wait until queued entries are stored."""
        await self._writer.flush()

    def _write(self, txn: Any, key: bytes, value: bytes, now: int) -> None:
        total = _read_total(txn, self._meta)
        old = txn.get(key, db=self._entries)
        if old is not None:
            total -= len(key) + len(old)
            old_entry = cache_pb2.CacheEntry.FromString(old)
            txn.delete(struct.pack(">q", old_entry.created_unix) + key, db=self._order)
        txn.put(key, value, db=self._entries)
        txn.put(struct.pack(">q", now) + key, b"", db=self._order)
        total += len(key) + len(value)
        if total > self._max_bytes:
            total = self._evict(txn, total)
        txn.put(_TOTAL, struct.pack(">q", total), db=self._meta)

    def _evict(self, txn: Any, total: int) -> int:
        cursor = txn.cursor(db=self._order)
        while total > self._max_bytes and cursor.first():
            order_key = cursor.key()
            key = order_key[8:]
            value = txn.pop(key, db=self._entries)
            if value is not None:
                total -= len(key) + len(value)
            cursor.delete()
        return total

    def stats(self) -> tuple[int, int]:
        """(entries, bytes) currently stored."""
        with self._env.begin() as txn:
            return txn.stat(self._entries)["entries"], _read_total(txn, self._meta)


def _read_total(txn: Any, db: Any) -> int:
    raw = txn.get(_TOTAL, db=db)
    return int(struct.unpack(">q", raw)[0]) if raw else 0
