"""One owned worker thread: idempotent start and stop, joined with a timeout; and the one-thread pools the
streams share (`SharedThread`), which count what waits on them."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")

logger = logging.getLogger(__name__)
_every_owned: weakref.WeakSet[OwnedThread] = weakref.WeakSet()  # for the shutdown's "every thread joined"
_every_shared: weakref.WeakSet[SharedThread] = weakref.WeakSet()  # for /metrics' backlog of each


class OwnedThread:
    """Runs `target` on a daemon thread; `stop_event` tells the target's loop to end."""

    def __init__(self, target: Callable[[], None], *, name: str) -> None:
        self._target = target
        self.name = name
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        _every_owned.add(self)

    def start(self) -> None:
        """Start the thread; a second call while it runs does nothing."""
        if self._thread is not None:
            return
        self.stop_event.clear()
        self._thread = threading.Thread(target=self._target, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Ask the thread to end and wait up to `timeout_s`; safe to call more than once."""
        self.stop_event.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        thread.join(timeout_s)
        if thread.is_alive():
            logger.warning("Thread %s did not stop within %.1f s.", self.name, timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def running_owned_threads() -> list[str]:
    """Names of the owned threads of this process still running (empty once every one was joined)."""
    return sorted(t.name for t in list(_every_owned) if t.alive)


class SharedThread(ThreadPoolExecutor):
    """One thread that every stream hands work to (the neighbour detector, the alignment estimate); `backlog` is
    how many tasks are queued or running, which `/metrics` shows: a shared thread that cannot keep up shows there
    before it shows as latency."""

    def __init__(self, label: str) -> None:
        super().__init__(max_workers=1, thread_name_prefix=f"rohde-{label}")
        self.label = label  # what /metrics calls it
        self._count_lock = threading.Lock()
        self._backlog = 0
        _every_shared.add(self)

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        with self._count_lock:
            self._backlog += 1
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._task_done(None)
            raise
        future.add_done_callback(self._task_done)
        return future

    def _task_done(self, _future: object) -> None:
        with self._count_lock:
            self._backlog -= 1

    @property
    def backlog(self) -> int:
        with self._count_lock:
            return self._backlog


def shared_thread_backlogs() -> dict[str, int]:
    """Each shared thread of this process (by label) -> tasks queued or running on it."""
    return {t.label: t.backlog for t in list(_every_shared)}
