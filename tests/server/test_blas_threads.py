"""The serving process runs numpy's and scipy's OpenBLAS with one thread (no spinning workers)."""

from __future__ import annotations

import sys

import pytest

from rohde.server.blas_threads import blas_thread_counts, limit_blas_threads


def test_limit_blas_threads_sets_every_loaded_openblas() -> None:
    before = blas_thread_counts()
    try:
        changed = limit_blas_threads(1)
        after = blas_thread_counts()
        # The libraries are found through /proc/self/maps: elsewhere nothing is found and nothing changes.
        assert bool(changed) is sys.platform.startswith("linux"), "numpy's OpenBLAS should be loaded and found"
        assert set(changed) <= set(after)
        assert all(count == 1 for count in after.values()), after
    finally:
        for count in set(before.values()):
            limit_blas_threads(count)


def test_limit_blas_threads_refuses_zero() -> None:
    with pytest.raises(ValueError, match="n_threads"):
        limit_blas_threads(0)
