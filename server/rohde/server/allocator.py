"""Keep the serving process's resident memory flat over hours (glibc's malloc; elsewhere nothing changes).

Three causes of creep, each with its remedy:
- glibc raises its mmap threshold each time a large block is freed, after which blocks of that size come from
  the heap, which fragments and is rarely returned: a fixed threshold keeps large blocks (batches, windows
  of many streams) on mmap, returned on free.
- every thread that allocates may get an arena of its own (up to 8 per core), each holding its own free
  pages: the stream workers' quality estimates (a few hundred KB each) spread over many arenas. The arenas
  are capped at one per core.
- freed pages inside an arena stay resident until the arena's top is freed: `malloc_trim` returns them,
  called every `TRIM_INTERVAL_S` by the server (a few milliseconds of work)."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import os

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc mallopt parameters (malloc.h); setting the threshold ends its dynamic adjustment
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 1 << 20  # 1 MiB: one 192-channel window is 0.3 MB, a batch of eight 2.5 MB
TRIM_INTERVAL_S = 30.0


@functools.cache  # find_library runs ldconfig: once per process, not on every trim
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - present only in glibc; musl and others lack mallopt's semantics
    except (OSError, AttributeError):
        return None
    return libc


def configure_allocator(threshold_bytes: int = MMAP_THRESHOLD_BYTES, max_arenas: int | None = None) -> bool:
    """Fix glibc's mmap threshold and cap its arenas (default one per core, at least 2); True when both
    were applied, False where the C library is not glibc or refused."""
    libc = _glibc()
    if libc is None:
        return False
    arenas = max_arenas if max_arenas is not None else max(2, os.cpu_count() or 2)
    applied = True
    for param, value, what in ((M_MMAP_THRESHOLD, threshold_bytes, "M_MMAP_THRESHOLD"),
                               (M_ARENA_MAX, arenas, "M_ARENA_MAX")):
        if not libc.mallopt(param, value):
            logger.warning("mallopt(%s, %d) was refused; heap growth is left to the allocator", what, value)
            applied = False
    return applied


def trim_heap() -> bool:
    """Return the free pages of every arena to the system; True when some memory was released."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


async def trim_heap_periodically(interval_s: float = TRIM_INTERVAL_S) -> None:
    """`trim_heap` every `interval_s` until cancelled (off the event loop: it takes the arenas' locks)."""
    if _glibc() is None:
        return
    while True:
        await asyncio.sleep(interval_s)
        await asyncio.to_thread(trim_heap)
