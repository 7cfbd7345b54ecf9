"""The stream manager: owns every `StreamWorker`, finds new streams and gives returning ones back.

`StreamManager` runs one watchdog thread that, every `resolve_interval_s`, reads the background resolver's
list of streams matching the query (name, type, source_id): a new stream gets a worker (up to
`max_streams`); a stream that reappears after loss (same source_id, or, when streams are chosen by
name/type, the same name and type with a new source_id) is handed back to the worker that lost it,
which keeps its `stream_id`; a refused stream that vanished is forgotten; a dead worker thread is
reported in `/health`.
"""

from __future__ import annotations

import logging

from rohde.server.inference import ModelManager
from rohde.server.ingest_config import IngestConfig
from rohde.server.jobs import JobQueue
from rohde.server.lsl_inlet import StreamDescription, StreamQuery, StreamResolver
from rohde.server.metrics import ServerMetrics
from rohde.server.stream_worker import Announce, StreamState, StreamWorker
from rohde.server.threads import OwnedThread

logger = logging.getLogger(__name__)


class StreamManager:
    """Owns every StreamWorker and the watchdog thread that resolves, recovers and supervises them."""

    def __init__(self, *, query: StreamQuery, models: ModelManager, jobs: JobQueue,
                 metrics: ServerMetrics, config: IngestConfig, announce: Announce, max_streams: int,
                 resolve_interval_s: float) -> None:
        self.query = query
        self._models = models
        self._jobs = jobs
        self._metrics = metrics
        self._config = config
        self._announce = announce
        self.max_streams = max_streams
        self.resolve_interval_s = resolve_interval_s
        self.workers: dict[str, StreamWorker] = {}
        self._thread = OwnedThread(self._run, name="rohde-watchdog")
        self._stop = self._thread.stop_event
        self.error: str | None = None
        self.scans = 0
        self._resolver: StreamResolver | None = None

    def start(self) -> None:
        if self._resolver is None:
            self._resolver = StreamResolver(self.query, lsl_config=self._config.lsl_config)
        self._thread.start()

    def stop(self, timeout_s: float = 3.0) -> None:
        self._thread.stop(timeout_s)
        for worker in list(self.workers.values()):
            worker.stop()
        resolver, self._resolver = self._resolver, None
        if resolver is not None:
            resolver.close()

    @property
    def alive(self) -> bool:
        return self._thread.alive

    def states(self) -> dict[str, str]:
        """Stream id -> the name of its worker's state."""
        return {sid: w.state.value for sid, w in list(self.workers.items())}

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
        # A refused stream that has vanished is forgotten (it served nothing, and its slot is freed).
        present = {info.uid() for info in infos}
        for stream_id, worker in list(self.workers.items()):
            gone = worker.description is not None and worker.description.uid not in present
            if worker.state == StreamState.REFUSED and gone:
                logger.info("Refused stream %s has gone; forgetting it.", stream_id)
                worker.stop()
                del self.workers[stream_id]
        # Streams served now, and lost ones the resolver has not forgotten yet (same uid = same dead outlet).
        attached = {w.uid for w in self.workers.values() if w.uid}
        attached |= {w.description.uid for w in self.workers.values() if w.state == StreamState.LOST and w.description}
        for info in infos:
            desc = StreamDescription.from_info(info)
            if desc.uid in attached:
                continue
            lost = self._lost_worker_for(desc)
            if lost is not None:
                logger.info("Stream %s reappeared as %s (source_id %r).", lost.stream_id, desc.uid, desc.source_id)
                lost.attach(info)
            elif len(self.workers) < self.max_streams:
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

    def _lost_worker_for(self, desc: StreamDescription) -> StreamWorker | None:
        lost = [w for w in self.workers.values() if w.state == StreamState.LOST and w.description is not None]
        for worker in lost:
            if desc.source_id and worker.description is not None and worker.description.source_id == desc.source_id:
                return worker
        if self.query.source_id:
            return None  # chosen by source_id: only that source_id may take the place
        for worker in lost:
            d = worker.description
            if d is not None and d.name == desc.name and d.type == desc.type:
                return worker
        return None

    def _new_id(self, desc: StreamDescription) -> str:
        base = desc.source_id or f"{desc.name}@{desc.hostname}"
        stream_id = base
        if stream_id in self.workers:
            stream_id = f"{base}#{desc.uid[:8]}"
        return stream_id
