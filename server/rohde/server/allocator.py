"""Keep the serving process's heap from creeping: glibc's malloc raises its mmap threshold each time a
large block is freed, after which blocks of that size come from the heap, which fragments and is rarely
returned. A fixed threshold keeps large blocks (batches, windows of many streams) on mmap, returned on
free, so resident memory stays flat over hours instead of climbing in steps."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter (malloc.h); setting it also ends the dynamic adjustment
MMAP_THRESHOLD_BYTES = 1 << 20  # 1 MiB: one 192-channel window is 0.3 MB, a batch of eight 2.5 MB


def fix_mmap_threshold(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold; True when applied, False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - present only in glibc; musl and others lack mallopt's semantics
        applied = bool(libc.mallopt(M_MMAP_THRESHOLD, threshold_bytes))
    except (OSError, AttributeError):
        return False
    if not applied:
        logger.warning("mallopt(M_MMAP_THRESHOLD, %d) was refused; heap growth is left to the allocator",
                       threshold_bytes)
    return applied
