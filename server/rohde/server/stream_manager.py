"""The stream manager: owns every `StreamWorker`, finds new streams and gives returning ones back.

`StreamManager` runs one watchdog thread that, every `resolve_interval_s`, reads the background resolver's
list of streams matching the query (name, one of the accepted types, source_id):

- a new stream gets a worker (up to `max_streams`; when every slot is taken, the longest-lost worker
  gives its slot up) and a stream id that was never given to another device: its source_id (else
  name@host), with `#2`, `#3`... appended when that id already named a different stream;
- a stream that reappears after loss is handed back to the worker that lost it, which keeps its
  `stream_id`, only when it is the same device: the same name, type, channel count, rate and channel
  format, and the same source_id when streams are chosen by source_id (by name or type, a restart
  with a new source_id is the same device);
- a lost worker whose own outlet is still advertised (a stalled or stopped process) retries it every
  `retry_lost_after_s`, and recovers when samples flow again; an outlet abandoned for a new one (its
  worker took the new one) gets no worker while it stays advertised;
- a lost worker is retired from `/streams` after `retire_lost_after_s`; a refused stream that vanished
  is forgotten; a dead worker thread is reported in `/health`.
"""

from __future__ import annotations

import logging
import time
from typing import NamedTuple

from rohde.server.inference import ModelManager
from rohde.server.ingest_config import IngestConfig
from rohde.server.jobs import JobQueue
from rohde.server.lsl_inlet import StreamDescription, StreamQuery, StreamResolver
from rohde.server.metrics import ServerMetrics
from rohde.server.stream_worker import Announce, StreamState, StreamWorker
from rohde.server.threads import OwnedThread

logger = logging.getLogger(__name__)


class DeviceSignature(NamedTuple):
    """What makes two LSL streams the same device for the server (source_id aside)."""

    name: str
    type: str
    n_channels: int
    fs_hz: float
    channel_format: str

    @classmethod
    def of(cls, desc: StreamDescription) -> DeviceSignature:
        return cls(desc.name, desc.type, desc.n_channels, desc.fs_hz, desc.channel_format)


class StreamManager:
    """Owns every StreamWorker and the watchdog thread that resolves, recovers and supervises them."""

    def __init__(self, *, query: StreamQuery, models: ModelManager, jobs: JobQueue,
                 metrics: ServerMetrics, config: IngestConfig, announce: Announce, max_streams: int,
                 resolve_interval_s: float, retire_lost_after_s: float = 600.0,
                 retry_lost_after_s: float | None = None) -> None:
        self.query = query
        self._models = models
        self._jobs = jobs
        self._metrics = metrics
        self._config = config
        self._announce = announce
        self.max_streams = max_streams
        self.resolve_interval_s = resolve_interval_s
        self.retire_lost_after_s = retire_lost_after_s
        # A retry reads for `stale_after_s`; waiting as long again between retries keeps a silent outlet cheap.
        self.retry_lost_after_s = config.stale_after_s if retry_lost_after_s is None else retry_lost_after_s
        self.workers: dict[str, StreamWorker] = {}
        self._issued: dict[str, tuple[DeviceSignature, str]] = {}  # every id given out -> (device, source_id)
        self._abandoned: set[str] = set()  # uids of outlets a worker left for a new one, while still advertised
        self._thread = OwnedThread(self._run, name="rohde-watchdog")
        self._stop = self._thread.stop_event
        self.error: str | None = None
        self.scans = 0
        self.retired = 0
        self._resolver: StreamResolver | None = None

    def start(self) -> None:
        if self._resolver is None:
            self._resolver = StreamResolver(self.query, lsl_config=self._config.lsl_config)
        self._thread.start()

    def stop(self, timeout_s: float = 3.0) -> None:
        """Stop the watchdog and every worker: all are told at once, then joined (each within `timeout_s`)."""
        self._stop.set()
        workers = list(self.workers.values())
        for worker in workers:
            worker.signal_stop()
        self._thread.stop(timeout_s)
        for worker in workers:
            worker.stop(timeout_s)
        resolver, self._resolver = self._resolver, None
        if resolver is not None:
            resolver.close()

    @property
    def alive(self) -> bool:
        return self._thread.alive

    def states(self) -> dict[str, str]:
        """Stream id -> the name of its worker's state."""
        return {sid: w.state.value for sid, w in list(self.workers.items())}

    def known_ids(self) -> set[str]:
        """Every stream id served now or given out before (also of retired workers)."""
        return set(self._issued) | set(self.workers)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan()
            except Exception as exc:
                logger.exception("Watchdog scan failed.")
                self.error = f"{type(exc).__name__}: {exc}"
            self._stop.wait(self.resolve_interval_s)

    def scan(self) -> None:
        """One watchdog pass: supervise workers, then attach new or returning streams."""
        for worker in list(self.workers.values()):
            if not worker.alive and worker.error:
                self.error = f"worker {worker.stream_id} died: {worker.error}"
        if self._resolver is None:
            return
        infos = self._resolver.results()
        self.scans += 1
        if self.scans % 10 == 1:
            for worker in list(self.workers.values()):
                worker.refresh_time_correction()
        now = time.monotonic()
        present = {info.uid() for info in infos}
        self._abandoned &= present  # an abandoned outlet that vanished may come back as a stream of its own
        for stream_id, worker in list(self.workers.items()):
            gone = worker.description is not None and worker.description.uid not in present
            # A refused stream that has vanished is forgotten (it served nothing, and its slot is freed).
            if worker.state == StreamState.REFUSED and gone:
                logger.info("Refused stream %s has gone; forgetting it.", stream_id)
                self._retire(stream_id)
            elif worker.idle_lost and now - worker.idle_since_monotonic > self.retire_lost_after_s:
                logger.info("Stream %s has been lost for over %g s; retiring it.", stream_id, self.retire_lost_after_s)
                self._retire(stream_id)
        # Streams served now, and lost ones whose outlet is still listed (retried below, never a second worker).
        attached = {w.uid for w in self.workers.values() if w.uid}
        lost_uids = {w.description.uid: w for w in self.workers.values()
                     if w.state == StreamState.LOST and w.description}
        attached |= set(lost_uids) | self._abandoned
        for info in infos:
            desc = StreamDescription.from_info(info)
            own = lost_uids.get(desc.uid)
            if own is not None:
                if own.idle_lost and now - own.idle_since_monotonic >= self.retry_lost_after_s:
                    own.attach(info)  # the same outlet, still advertised: read it again
                continue
            if desc.uid in attached:
                continue
            lost = self._lost_worker_for(desc)
            if lost is not None:
                logger.info("Stream %s reappeared as %s (source_id %r).", lost.stream_id, desc.uid, desc.source_id)
                if lost.description is not None and lost.description.uid != desc.uid:
                    self._abandoned.add(lost.description.uid)
                    lost_uids.pop(lost.description.uid, None)
                lost.attach(info)
            elif len(self.workers) < self.max_streams or self._free_a_slot():
                stream_id = self._new_id(desc)
                worker = StreamWorker(stream_id, query=self.query, models=self._models, jobs=self._jobs,
                                      metrics=self._metrics, config=self._config, announce=self._announce)
                self.workers[stream_id] = worker
                worker.attach(info)
                worker.start()
            else:
                logger.debug("Ignoring stream %r: already serving max_streams=%d.", desc.name, self.max_streams)
                continue
            attached.add(desc.uid)

    def _retire(self, stream_id: str) -> None:
        """Stop a worker and drop it from `/streams`; its id stays reserved for its own device."""
        worker = self.workers.pop(stream_id)
        self.retired += 1  # counted as it leaves the table, so no reader sees it gone but not counted
        worker.stop()  # joins the worker's thread: may take a while

    def _free_a_slot(self) -> bool:
        """Retire the longest-lost idle worker so a new stream can be served; False when none is lost."""
        lost = [w for w in self.workers.values() if w.idle_lost]
        if not lost:
            return False
        oldest = min(lost, key=lambda w: w.idle_since_monotonic)
        logger.info("Retiring lost stream %s to serve a new one (max_streams=%d).", oldest.stream_id, self.max_streams)
        self._retire(oldest.stream_id)
        return True

    def _lost_worker_for(self, desc: StreamDescription) -> StreamWorker | None:
        """The lost worker of the same device as `desc`: the same signature, preferring the same source_id;
        when streams are chosen by source_id, only that source_id."""
        signature = DeviceSignature.of(desc)
        lost = [w for w in self.workers.values()
                if w.state == StreamState.LOST and w.description is not None
                and DeviceSignature.of(w.description) == signature]
        same_source = [w for w in lost if desc.source_id and w.description is not None
                       and w.description.source_id == desc.source_id]
        if same_source:
            return same_source[0]
        if self.query.source_id or not lost:
            return None  # chosen by source_id: only that source_id may take the place
        return max(lost, key=lambda w: w.idle_since_monotonic)  # the most recently lost

    def _new_id(self, desc: StreamDescription) -> str:
        """An id never given to another device: the source_id (else name@host), then `#2`, `#3`..."""
        base = desc.source_id or f"{desc.name}@{desc.hostname}"
        owner = (DeviceSignature.of(desc), desc.source_id)
        n = 1
        while True:
            stream_id = base if n == 1 else f"{base}#{n}"
            previous = self._issued.get(stream_id)
            if stream_id not in self.workers and (previous is None or previous == owner):
                self._issued[stream_id] = owner
                return stream_id
            n += 1
