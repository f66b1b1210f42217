"""batches(): items grouped by arrival, errors after the items before them, the source closed on early exit."""

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing

import pytest

from engine.batching import batches


async def test_ready_items_travel_together_and_late_ones_alone() -> None:
    release = asyncio.Event()

    async def source() -> AsyncGenerator[int, None]:
        for item in (1, 2, 3):
            yield item
        await release.wait()
        yield 4

    seen = []
    async with aclosing(batches(source())) as grouped:
        async for batch in grouped:
            seen.append(batch)
            if 3 in batch:
                release.set()
    assert seen == [[1], [2, 3], [4]]


async def test_the_first_item_leaves_before_the_rest_of_its_burst_is_read() -> None:
    produced: list[int] = []

    async def source() -> AsyncGenerator[int, None]:
        for item in (1, 2, 3):  # all ready at once, as a burst in one socket read is
            produced.append(item)
            yield item

    async with aclosing(batches(source())) as grouped:
        assert await anext(grouped) == [1]
        assert produced == [1]
        assert await anext(grouped) == [2, 3]


async def test_an_error_comes_after_the_items_before_it() -> None:
    async def source() -> AsyncGenerator[int, None]:
        yield 1
        raise ValueError("upstream broke")

    seen: list[list[int]] = []

    async def drain() -> None:
        async for batch in batches(source()):
            seen.append(batch)

    with pytest.raises(ValueError, match="upstream broke"):
        await drain()
    assert seen == [[1]]


async def test_leaving_early_closes_the_source() -> None:
    closed = asyncio.Event()

    async def source() -> AsyncGenerator[int, None]:
        try:
            yield 1
            await asyncio.Event().wait()
        finally:
            closed.set()

    async with aclosing(batches(source())) as grouped:
        async for _ in grouped:
            break
    assert closed.is_set()
