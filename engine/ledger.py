"""The usage ledger: one durable UsageRecord per request in LMDB, and live subscribers to new records."""

import asyncio
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

from chittycan.v1 import usage_pb2
from engine.store import Store, StoreWriter

_SUBSCRIBER_BACKLOG = 10_000


class UsageLedger:
    """Records are keyed by arrival time (ns, big-endian) then request id, so a cursor reads them in time order."""

    def __init__(self, store: Store, writer: StoreWriter) -> None:
        self._env = store.env
        self._db = store.db("usage")
        self._writer = writer
        self._subscribers: set[asyncio.Queue[usage_pb2.UsageRecord]] = set()

    def record(self, record: usage_pb2.UsageRecord) -> None:
        """Queue `record` for the ledger and hand it to live subscribers; never blocks."""
        key = struct.pack(">q", record.time.ToNanoseconds()) + record.request_id.encode()
        value = record.SerializeToString()
        self._writer.submit(lambda txn: txn.put(key, value, db=self._db))
        for queue in self._subscribers:
            if queue.qsize() < _SUBSCRIBER_BACKLOG:
                queue.put_nowait(record)

    async def flush(self) -> None:
        """Wait until queued records are durable."""
        await self._writer.flush()

    def read(self, since_ns: int = 0, until_ns: int | None = None) -> Iterator[usage_pb2.UsageRecord]:
        """Records from `since_ns` (inclusive) to `until_ns` (exclusive), oldest first."""
        with self._env.begin(db=self._db) as txn:
            cursor: Any = txn.cursor()
            if not cursor.set_range(struct.pack(">q", since_ns)):
                return
            for key, value in cursor:
                if until_ns is not None and struct.unpack(">q", key[:8])[0] >= until_ns:
                    return
                yield usage_pb2.UsageRecord.FromString(value)

    async def watch(self) -> AsyncIterator[usage_pb2.UsageRecord]:
        """Every record recorded from now on, as it is recorded (a slow subscriber skips past its backlog)."""
        queue: asyncio.Queue[usage_pb2.UsageRecord] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)
