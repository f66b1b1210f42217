"""The usage ledger: one durable UsageRecord per request in LMDB, followed live by WatchUsage across processes."""

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from chittycan.v1 import usage_pb2
from engine.request_log import RequestLog
from engine.store import Store, StoreWriter

_POLL_SECONDS = 0.2  # how soon a follower sees what other engine processes wrote
# Retention is enforced while writing: every _PRUNE_EVERY records, up to _PRUNE_BATCH expired ones go.
_PRUNE_EVERY = 256
_PRUNE_BATCH = 1024


class UsageLedger:
    """Records are keyed by arrival time (ns, big-endian) then request id, so a cursor reads them in time order.

    A record is written when its request ends, so arrival order is not write order: a long stream lands behind
    records that arrived after it. The `usage_order` index maps a write sequence number (8 bytes, big-endian,
    assigned in the write transaction, so unique across processes) to the record's key, for readers that
    follow the ledger incrementally (`read_written`).
    """

    def __init__(
        self,
        store: Store,
        writer: StoreWriter,
        *,
        retention_seconds: int = 62 * 86400,
        max_records: int = 10_000_000,
        clock: Any = time.time,
        request_log: RequestLog | None = None,
    ) -> None:
        self._retention_ns = retention_seconds * 1_000_000_000
        self._max_records = max_records
        self._clock = clock
        self._env = store.env
        self._db = store.db("usage")
        self._order = store.db("usage_order")
        self._writer = writer
        self._followers: set[asyncio.Event] = set()
        self._request_log = request_log

    def record(self, record: usage_pb2.UsageRecord) -> None:
        """Queue `record` for the ledger (followers are woken once it is committed) and the request log; never
        blocks. The record must not change afterwards."""
        key = struct.pack(">q", record.time.ToNanoseconds()) + record.request_id.encode()
        self._writer.submit_item(self._put, (key, record.SerializeToString()), self._committed)
        if self._request_log is not None:
            self._request_log.log(record)

    def _put(self, txn: Any, items: list[tuple[bytes, bytes]]) -> None:
        """Store `items` (key, record) and give them the next write sequence numbers, in order."""
        txn.cursor(db=self._db).putmulti(items)
        order: Any = txn.cursor(db=self._order)
        last = struct.unpack(">Q", order.key())[0] if order.last() else 0
        order.putmulti([(struct.pack(">Q", last + i), key) for i, (key, _) in enumerate(items, 1)])
        if (last + len(items)) // _PRUNE_EVERY > last // _PRUNE_EVERY:
            self._prune(txn)

    def _prune(self, txn: Any) -> None:
        """Drop records older than the retention window, or beyond `max_records`, oldest written first; a bounded
        number per call, so the store file stays within its map on a busy gateway."""
        cutoff = int(self._clock() * 1e9) - self._retention_ns
        excess = txn.stat(self._db)["entries"] - self._max_records
        order: Any = txn.cursor(db=self._order)
        removed = 0
        while removed < _PRUNE_BATCH and order.first():
            key = order.value()
            if removed >= excess and struct.unpack(">q", key[:8])[0] >= cutoff:
                return
            txn.delete(key, db=self._db)
            order.delete()
            removed += 1

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

    def read_written(self, after: int | None) -> Iterator[tuple[int, usage_pb2.UsageRecord]]:
        """(sequence, record) for the records written after write sequence `after`, in write order.

        `after=None` reads every record instead, oldest arrival first (records written before the write index
        existed included), each paired with the newest sequence of the same snapshot, so a reader resuming from
        the highest sequence it saw misses nothing and counts nothing twice.
        """
        with self._env.begin() as txn:
            order: Any = txn.cursor(db=self._order)
            if after is None:
                newest = struct.unpack(">Q", order.key())[0] if order.last() else 0
                for _, raw in txn.cursor(db=self._db):
                    yield newest, usage_pb2.UsageRecord.FromString(raw)
                return
            if not order.set_range(struct.pack(">Q", after + 1)):
                return
            for raw_sequence, key in order:
                found = txn.get(key, db=self._db)
                if found is not None:
                    yield struct.unpack(">Q", raw_sequence)[0], usage_pb2.UsageRecord.FromString(found)

    def newest_sequence(self) -> int:
        """The write sequence of the newest record (0 for an empty ledger): where a follower starts."""
        with self._env.begin(db=self._order) as txn:
            cursor: Any = txn.cursor()
            return int(struct.unpack(">Q", cursor.key())[0]) if cursor.last() else 0

    async def follow(self, after: int) -> AsyncIterator[usage_pb2.UsageRecord]:
        """Every record written after sequence `after`, by any engine process sharing the store, as it is written.

        This process's commits wake the follower at once; other processes' are picked up within `_POLL_SECONDS`.
        """
        wake = asyncio.Event()
        self._followers.add(wake)
        try:
            while True:
                wake.clear()
                for sequence, record in self.read_written(after):
                    after = sequence
                    yield record
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), _POLL_SECONDS)
        finally:
            self._followers.discard(wake)

    def _committed(self) -> None:
        for wake in self._followers:
            wake.set()
