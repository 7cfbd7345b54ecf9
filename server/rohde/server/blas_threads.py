"""One BLAS thread in the serving process: its cores belong to the stream threads.

numpy and scipy each load their own OpenBLAS, which starts one worker thread per core and, after every
call it splits across them (the neighbour detector's `(C, F) @ (F, C)` product, the batched solves, a
repair's matmul), keeps those workers spinning on the CPU for a while in case another call follows.
With a neighbour estimate per stream every second that spinning never stops: measured on 2 cores, one
192-channel stream worker cost 0.155 cores with OpenBLAS's default threads and 0.059 with one. The
server's parallelism is its streams (one thread each) and the matrices are small, so one BLAS thread
per calling thread is both cheaper and as fast.

`OPENBLAS_NUM_THREADS=1` works only when set before numpy starts; `limit_blas_threads` sets the count
at run time instead, through each OpenBLAS that is loaded (found in `/proc/self/maps`, Linux only;
elsewhere nothing changes).
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# The setter's name in each build: plain OpenBLAS, and the scipy-openblas builds that numpy (64-bit
# integers) and scipy (32-bit) bundle.
_SETTERS = ("openblas_set_num_threads", "scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads")
_GETTERS = ("openblas_get_num_threads", "scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads")


def _loaded_openblas(maps: Path = Path("/proc/self/maps")) -> list[str]:
    """Paths of the OpenBLAS libraries mapped into this process (empty where /proc is missing)."""
    try:
        lines = maps.read_text().splitlines()
    except OSError:
        return []
    paths = {line.split(maxsplit=5)[5] for line in lines if len(line.split(maxsplit=5)) == 6}
    return sorted(p for p in paths if "openblas" in Path(p).name.lower() and ".so" in Path(p).name)


def _function(lib: ctypes.CDLL, names: tuple[str, ...]) -> Any:
    """The first of `names` that `lib` exports, or None."""
    for name in names:
        func = getattr(lib, name, None)
        if func is not None:
            return func
    return None


def blas_thread_counts() -> dict[str, int]:
    """Each loaded OpenBLAS (by file name) and its current thread count."""
    counts: dict[str, int] = {}
    for path in _loaded_openblas():
        getter = _function(ctypes.CDLL(path), _GETTERS)
        if getter is not None:
            counts[Path(path).name] = int(getter())
    return counts


def limit_blas_threads(n_threads: int = 1) -> list[str]:
    """Set every loaded OpenBLAS (numpy's and scipy's, imported first) to `n_threads` threads; returns the
    file names of the libraries changed."""
    if n_threads < 1:
        raise ValueError(f"n_threads must be at least 1, got {n_threads}.")
    import numpy  # noqa: F401 - loads numpy's OpenBLAS
    import scipy.linalg  # noqa: F401 - loads scipy's

    changed = []
    for path in _loaded_openblas():
        try:
            lib = ctypes.CDLL(path)  # already mapped: the same handle, nothing is loaded twice
        except OSError:
            continue
        setter = _function(lib, _SETTERS)
        if setter is not None:
            setter(ctypes.c_int(n_threads))
            changed.append(Path(path).name)
    logger.debug("BLAS threads set to %d in %s.", n_threads, changed or "no loaded OpenBLAS")
    return changed
