"""Grouping a stream's items by arrival, so what an upstream sent together crosses the gRPC hop as one message."""

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Generic, TypeVar

T = TypeVar("T")
_QUEUE_LIMIT = 256


class _End(Generic[T]):
    """The end of the source, with the exception it ended with, if any."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


async def batches(source: AsyncGenerator[T, None], limit: int = 64) -> AsyncGenerator[list[T], None]:
    """The first item alone, as soon as it arrives; then lists of the items that were ready when the consumer
    asked. Never waits to fill a batch.

    The first item does not wait for the rest of its burst: reading a burst that arrived in one socket read never
    suspends, so it would otherwise hold the first item back until the whole burst had been parsed.
    After the first item a task reads `source` ahead (at most a bounded queue's worth); leaving early cancels it,
    which closes `source`. An exception from `source` is raised after the items that came before it.
    """
    async with aclosing(source):
        try:
            first = await anext(source)
        except StopAsyncIteration:
            return
        yield [first]
        async with aclosing(_read_ahead(source, limit)) as rest:
            async for batch in rest:
                yield batch


async def _read_ahead(source: AsyncGenerator[T, None], limit: int) -> AsyncGenerator[list[T], None]:
    queue: asyncio.Queue[T | _End[T]] = asyncio.Queue(_QUEUE_LIMIT)

    async def pump() -> None:
        try:
            async for item in source:
                await queue.put(item)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            await queue.put(_End(exc))
        else:
            await queue.put(_End(None))

    task = asyncio.create_task(pump())
    try:
        while True:
            batch: list[T] = []
            item = await queue.get()
            while True:
                if isinstance(item, _End):
                    if batch:
                        yield batch
                    if item.error is not None:
                        raise item.error
                    return
                batch.append(item)
                if len(batch) >= limit or queue.empty():
                    break
                item = queue.get_nowait()
            yield batch
    finally:
        task.cancel()
        await asyncio.wait([task])  # the pump's own CancelledError stays in the task; ours still propagates
