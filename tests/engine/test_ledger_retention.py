"""The usage ledger keeps its retention window: old records are pruned as new ones are written."""

from pathlib import Path

from google.protobuf import timestamp_pb2

from chittycan.v1 import usage_pb2
from engine.ledger import UsageLedger
from engine.store import Store, StoreWriter

DAY = 86400


async def test_records_older_than_the_retention_window_are_pruned(tmp_path: Path) -> None:
    now = 1_780_000_000.0
    store = Store(tmp_path, map_size=64 << 20)
    writer = StoreWriter(store)
    writer.start()
    ledger = UsageLedger(store, writer, retention_seconds=30 * DAY, clock=lambda: now)
    for index in range(600):
        age_days = 40 if index < 300 else 1  # the first half is past the window
        stamp = timestamp_pb2.Timestamp()
        stamp.FromNanoseconds(int((now - age_days * DAY) * 1e9) + index)
        ledger.record(usage_pb2.UsageRecord(request_id=f"req_{index}", time=stamp))
    await ledger.flush()
    kept = [r.request_id for r in ledger.read()]
    await writer.close()
    store.close()
    assert kept == [f"req_{i}" for i in range(300, 600)]


async def test_the_ledger_keeps_at_most_max_records(tmp_path: Path) -> None:
    now = 1_780_000_000.0
    store = Store(tmp_path, map_size=64 << 20)
    writer = StoreWriter(store)
    writer.start()
    ledger = UsageLedger(store, writer, retention_seconds=30 * DAY, max_records=200, clock=lambda: now)
    for index in range(512):
        stamp = timestamp_pb2.Timestamp()
        stamp.FromNanoseconds(int(now * 1e9) + index)
        ledger.record(usage_pb2.UsageRecord(request_id=f"req_{index:03d}", time=stamp))
    await ledger.flush()
    kept = [r.request_id for r in ledger.read()]
    await writer.close()
    store.close()
    assert kept == [f"req_{i:03d}" for i in range(312, 512)], "the newest 200 stay"
