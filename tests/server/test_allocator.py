"""The allocator settings of `rohde serve` (glibc here: both apply, and a trim runs)."""

from __future__ import annotations

import asyncio
import platform

import pytest

from rohde.server.allocator import configure_allocator, trim_heap, trim_heap_periodically

GLIBC = platform.libc_ver()[0] == "glibc"  # elsewhere both calls must say they did nothing


def test_configure_allocator_applies_threshold_and_arena_cap() -> None:
    assert configure_allocator(max_arenas=4) is GLIBC


def test_trim_returns_freed_blocks() -> None:
    configure_allocator(max_arenas=4)
    blocks = [bytearray(200_000) for _ in range(200)]  # heap blocks (under the mmap threshold)
    del blocks[:-1]  # the last one pins the heap's top, so only a trim can give the rest back
    assert trim_heap() is GLIBC


def test_periodic_trim_runs_until_cancelled() -> None:
    async def run() -> None:
        task = asyncio.create_task(trim_heap_periodically(interval_s=0.01))
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
