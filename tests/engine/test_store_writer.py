"""StoreWriter: batched commits, items for one ManyWriter written by one call, commits visible and flushed."""

from pathlib import Path
from typing import Any

from engine.store import Store, StoreWriter


async def test_items_of_a_batch_reach_their_writer_in_one_call_in_order(tmp_path: Path) -> None:
    store = Store(tmp_path, map_size=16 << 20)
    writer = StoreWriter(store)
    writer.start()
    db = store.db("items")
    calls: list[list[int]] = []
    committed: list[int] = []

    def write_many(txn: Any, items: list[int]) -> None:
        calls.append(list(items))
        for item in items:
            txn.put(b"item-%d" % item, b"", db=db)

    for item in range(5):
        writer.submit_item(write_many, item, lambda item=item: committed.append(item))
    writer.submit(lambda txn: txn.put(b"single", b"", db=db))
    await writer.flush()
    writer.submit_item(write_many, 5)
    await writer.flush()
    await writer.close()
    with store.env.begin(db=db) as txn:
        stored = sorted(bytes(key) for key, _ in txn.cursor())
    store.close()
    assert calls == [[0, 1, 2, 3, 4], [5]], "one call per batch, items in submission order"
    assert committed == [0, 1, 2, 3, 4], "each item's commit callback runs"
    assert stored == sorted([b"item-%d" % i for i in range(6)] + [b"single"])
