"""The one LMDB environment under the data directory, shared by every engine process, and its batched writer."""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

log = logging.getLogger(__name__)

WriteOp = Callable[[Any], None]
# Writes several items in one call: for stores with per-call overhead (cursors, sequence numbers) and fewer trips
# through py-lmdb, which lets go of the GIL on every call.
ManyWriter = Callable[[Any, list[Any]], None]
_BATCH = 512
# After the first write of a batch, wait this long for more: one thread hand-off and one durable commit (an fsync:
# ~0.4 ms, ~0.18 ms of CPU here) then serve many requests instead of one each. At 5 ms, a gateway answering
# 1,000-3,000 sequential requests a second committed every 5-15 requests (12-36 us of CPU each); at 20 ms, a quarter.
# A clean shutdown flushes; a killed process loses at most this window of writes (LMDB itself stays intact).
_COALESCE_SECONDS = 0.02


@dataclass(frozen=True, slots=True)
class _Item:
    """One item for a ManyWriter (StoreWriter.submit_item)."""

    write: ManyWriter
    item: Any


def _writing(write: ManyWriter, items: list[Any]) -> WriteOp:
    """The write op that hands `items` (filled in while the batch is gathered) to `write`."""
    return lambda txn: write(txn, items)


class Store:
    """Opens the environment once per process; LMDB's own lock makes several processes safe.

    Commits are durable (fsync per transaction) and LMDB is copy-on-write, so a crashed process never leaves a
    corrupted store: at worst the transaction in flight is lost.
    """

    def __init__(self, data_dir: Path, *, map_size: int = 1 << 30) -> None:
        path = data_dir / "store"
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), map_size=map_size, max_dbs=16, metasync=False, readahead=False)
        self._dbs: dict[bytes, Any] = {}

    def db(self, name: str) -> Any:
        """A named database, created on first use."""
        key = name.encode()
        if key not in self._dbs:
            self._dbs[key] = self.env.open_db(key)
        return self._dbs[key]

    def write(self, ops: list[WriteOp]) -> None:
        """Run `ops` in one write transaction (blocking: call from a thread)."""
        with self.env.begin(write=True) as txn:
            for op in ops:
                op(txn)

    def close(self) -> None:
        """Close the environment."""
        self.env.close()


class StoreWriter:
    """Queues writes off the request path and commits them in batches on a worker thread.

    `flush()` waits until everything submitted so far is committed; `close()` flushes and stops, so a clean
    shutdown loses nothing.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: asyncio.Queue[tuple[WriteOp | _Item, Callable[[], None] | None] | asyncio.Event] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the writer task on the running loop."""
        self._task = asyncio.create_task(self._run(), name="store-writer")

    def submit(self, op: WriteOp, on_commit: Callable[[], None] | None = None) -> None:
        """Queue one write; never blocks. `on_commit` runs on the event loop once the write's batch is over."""
        self._queue.put_nowait((op, on_commit))

    def submit_item(self, write: ManyWriter, item: Any, on_commit: Callable[[], None] | None = None) -> None:
        """Queue `item` for `write`, which gets every item queued for it in the same batch, in order, in one call."""
        self._queue.put_nowait((_Item(write, item), on_commit))

    async def flush(self) -> None:
        """Wait for everything submitted before this call to be committed."""
        done = asyncio.Event()
        self._queue.put_nowait(done)
        await done.wait()

    async def close(self) -> None:
        """Flush and stop the writer."""
        if self._task is None:
            return
        await self.flush()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            if not self._task.cancelled():
                raise
        self._task = None

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            if not isinstance(item, asyncio.Event):
                await asyncio.sleep(_COALESCE_SECONDS)
            batch: list[WriteOp] = []
            grouped: dict[ManyWriter, list[Any]] = {}
            waiters: list[asyncio.Event] = []
            callbacks: list[Callable[[], None]] = []
            count = 0
            while True:
                if isinstance(item, asyncio.Event):
                    waiters.append(item)
                else:
                    op, on_commit = item
                    count += 1
                    if isinstance(op, _Item):
                        if op.write not in grouped:
                            grouped[op.write] = []
                            batch.append(_writing(op.write, grouped[op.write]))
                        grouped[op.write].append(op.item)
                    else:
                        batch.append(op)
                    if on_commit is not None:
                        callbacks.append(on_commit)
                if count >= _BATCH or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await asyncio.to_thread(self._commit, batch)
            for callback in callbacks:
                callback()
            for waiter in waiters:
                waiter.set()

    def _commit(self, batch: list[WriteOp]) -> None:
        try:
            self._store.write(batch)
        except lmdb.Error:
            log.exception("batched store write failed; retrying each write alone")
            for op in batch:
                try:
                    self._store.write([op])
                except lmdb.Error:
                    log.exception("store write lost")
