"""One worker per LSL stream: the connection state machine around a `WindowAssembler`.

A `StreamWorker` owns one inlet and one thread. It validates a stream handed to it by `attach`
against the active model (rate and format from the resolver's answer; then, from the stream's full
description, which of its channels are the model's, in which order and unit: `ChannelMapping`),
refusing one that does not fit with the reason, opens it, follows model changes, and pulls: each
pull waits in liblsl for the samples missing until the next window end (one wake-up per hop, not per
outlet chunk), comes back as the model's channels in float32 uV, and goes to the assembler, whose
windows go on the inference queue.

A worker notices loss itself (LostError from liblsl, or no samples for `stale_after_s`), announces
it and waits for `attach` (from the `StreamManager`) to hand it the stream again: a new outlet, or the
same one while it is still advertised (a stalled or stopped process). A lost stream stays lost until
samples arrive again, so reopening a silent outlet neither announces a recovery nor counts a new loss.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import numpy as np

from rohde.core.channel_map import ChannelMapping
from rohde.core.errors import StreamMismatchError
from rohde.server.inference import ActiveModel, ModelManager
from rohde.server.ingest_config import IngestConfig
from rohde.server.jobs import JobQueue
from rohde.server.live_alignment import ALIGNMENT_POOL, StreamAlignment
from rohde.server.lsl_inlet import InletReader, StreamDescription, StreamQuery, check_stream_basics, map_stream_channels
from rohde.server.messages import StatusEvent
from rohde.server.metrics import ServerMetrics
from rohde.server.threads import OwnedThread
from rohde.server.window_assembler import WindowAssembler

logger = logging.getLogger(__name__)


class StreamState(StrEnum):
    """A worker's state, as shown by /streams and /metrics."""

    CONNECTED = "connected"
    CONNECTING = "connecting"
    LOST = "lost"
    REFUSED = "refused"
    STOPPED = "stopped"
    WAITING = "waiting_for_model"


Announce = Callable[[StatusEvent, str, str, str | None], None]  # (event, stream_id, detail, source_id)


class StreamWorker:
    """Owns one stream's inlet, thread and window assembler; `start`, `attach`, `stop` (idempotent)."""

    def __init__(self, stream_id: str, *, query: StreamQuery, models: ModelManager, jobs: JobQueue,
                 metrics: ServerMetrics, config: IngestConfig, announce: Announce) -> None:
        self.stream_id = stream_id
        self.query = query
        self._models = models
        self._config = config
        self._announce = announce
        # Label-free alignment moves each window onto the model's training grid before it is queued.
        self.alignment = StreamAlignment(stream_id, enabled=config.alignment, warmup_s=config.alignment_warmup_s,
                                         min_score=config.alignment_min_score, executor=ALIGNMENT_POOL)
        self._assembler = WindowAssembler(stream_id, config=config, metrics=metrics,
                                          emit=lambda job: jobs.offer(self.alignment.process(job)))
        self._lock = threading.Lock()
        self._thread = OwnedThread(self._run, name=f"rohde-stream-{stream_id}")
        self._stop = self._thread.stop_event
        self._reader: InletReader | None = None
        self._pending: StreamDescription | None = None
        self._pending_info: Any = None
        self.description: StreamDescription | None = None
        self.mapping: ChannelMapping | None = None  # how the stream's channels feed the model
        self.state = StreamState.STOPPED
        self.reason = ""
        self.error: str | None = None
        self.ever_connected = False
        self.lost_count = 0
        self.recovered_count = 0
        self.last_data_monotonic = 0.0
        self.idle_since_monotonic = time.monotonic()  # when the last attempt to read a lost stream ended
        self.time_correction_s: float = float("nan")
        self._generation = 0  # the model generation this worker follows
        self._refused_info: Any = None  # kept so a later model that fits can open the stream

    # ---- ownership -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._thread.stop(timeout_s)
        self._close_reader()
        with self._lock:
            self.state = StreamState.STOPPED

    @property
    def alive(self) -> bool:
        return self._thread.alive

    def attach(self, info: Any) -> None:
        """Hand the worker a (new or returning) stream; the worker thread validates and opens it."""
        with self._lock:
            self._pending_info = info
            self._pending = StreamDescription.from_info(info)

    @property
    def uid(self) -> str | None:
        """The uid of the stream this worker serves or is about to serve; None when lost or stopped."""
        with self._lock:
            if self._pending is not None:
                return self._pending.uid
            served = (StreamState.CONNECTED, StreamState.CONNECTING, StreamState.REFUSED, StreamState.WAITING)
            if self.description and self.state in served:
                return self.description.uid
            return None

    @property
    def idle_lost(self) -> bool:
        """Lost, with no inlet open and nothing handed over: the stream manager may retry the stream."""
        with self._lock:
            return self.state == StreamState.LOST and self._reader is None and self._pending is None

    def signal_stop(self) -> None:
        """Ask the thread to end without waiting (`stop` then joins), so many workers stop in parallel."""
        self._stop.set()

    @property
    def samples_received(self) -> int:
        return self._assembler.samples_received

    @property
    def windows_emitted(self) -> int:
        return self._assembler.windows_emitted

    @property
    def last_lsl_time(self) -> float | None:
        return self._assembler.last_lsl_time

    def refresh_time_correction(self) -> None:
        """Ask liblsl for the current clock offset (called by the stream manager, not the pulling thread)."""
        reader = self._reader
        if reader is not None and self.state == StreamState.CONNECTED:
            self.time_correction_s = reader.time_correction()

    # ---- thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._take_pending()
                self._follow_model()
                reader = self._reader
                # LOST with an open reader: a lost stream reopened, read until samples arrive or it stays silent.
                if reader is None or self.state not in (StreamState.CONNECTED, StreamState.LOST):
                    self._stop.wait(0.05)
                    continue
                try:
                    samples, stamps = reader.pull(self._config.pull_wait_s,
                                                  min_samples=self._samples_wanted(reader.max_chunk))
                except ConnectionError as exc:
                    self._mark_lost(str(exc))
                    continue
                now = time.monotonic()
                if len(stamps) == 0:
                    if now - self.last_data_monotonic <= self._config.stale_after_s:
                        self._stop.wait(self._config.pull_interval_ms / 1000.0)
                    elif self.state == StreamState.LOST:  # still silent: close it until the next retry
                        self._close_reader()
                        self.idle_since_monotonic = now
                    else:
                        self._mark_lost(f"no samples for {self._config.stale_after_s:g} s")
                    continue
                if self.state == StreamState.LOST:
                    self._recovered()
                self.last_data_monotonic = now
                self._assembler.push(samples, stamps, pulled_at=time.perf_counter(),
                                     full=len(stamps) == reader.max_chunk)
        except Exception as exc:  # surfaced in /health; the stream manager reports the dead thread
            logger.exception("Stream worker %s failed.", self.stream_id)
            self.error = f"{type(exc).__name__}: {exc}"
            self.state = StreamState.STOPPED

    def _samples_wanted(self, max_chunk: int) -> int:
        """How many samples a pull waits for: those missing until the next window end, since no decision
        can come sooner; the thread then wakes once per hop instead of once per outlet chunk. The current
        model's windows count: a swap that changes them changes this count."""
        return min(self._assembler.samples_until_next_window, max_chunk)

    def _max_chunk(self, active: ActiveModel) -> int:
        return max(64, int(self._config.max_chunk_s * active.package.metadata.fs_hz))

    def _take_pending(self) -> None:
        with self._lock:
            info, desc = self._pending_info, self._pending
            if info is None or desc is None:
                return
            self._pending_info = self._pending = None
            # Description and state change together, under the lock `uid` reads, so the stream manager
            # never sees this stream unattached and gives it a second worker.
            was_lost = self.state == StreamState.LOST or (
                self.state in (StreamState.CONNECTING, StreamState.WAITING) and self.ever_connected)
            self.description = desc
            if self.state != StreamState.LOST:  # a lost stream stays lost until its samples flow again
                self.state = StreamState.CONNECTING
        self._close_reader()
        active = self._models.active
        if active is None:
            with self._lock:
                self.state, self.reason = StreamState.WAITING, "no active model"
                if self._pending_info is None:  # retried once a model is active
                    self._pending_info, self._pending = info, desc
            self._stop.wait(0.2)
            return
        try:
            check_stream_basics(desc, active.package.metadata)
        except StreamMismatchError as exc:
            self._refused_info = info
            self._refuse(str(exc))
            return
        self._open(info, active, recovered=was_lost)

    def _open(self, info: Any, active: ActiveModel, *, recovered: bool) -> None:
        opened = StreamDescription.from_info(info)
        max_chunk = self._max_chunk(active)
        try:
            reader = InletReader(info, buffer_s=self._config.inlet_buffer_s, max_chunk=max_chunk,
                                 lsl_config=self._config.lsl_config)
            full = reader.describe(self._config.open_timeout_s)  # the desc: channels, units, layout
        except StreamMismatchError as exc:
            self._refused_info = info
            self._refuse(str(exc))
            return
        except Exception as exc:  # liblsl raises TimeoutError or RuntimeError when the outlet vanished
            self._mark_lost(f"could not open inlet: {exc}")
            return
        self.description = full
        try:
            mapping = map_stream_channels(full, active.package.metadata, self.query.channels)
        except StreamMismatchError as exc:
            reader.close()
            self._refused_info = info
            self._refuse(str(exc))
            return
        try:
            reader.open(self._config.open_timeout_s)
        except Exception as exc:
            reader.close()
            self._mark_lost(f"could not open inlet: {exc}")
            return
        reader.use_mapping(mapping)
        self._use_mapping(mapping)
        with self._lock:  # `idle_lost` reads the reader under the lock
            self._reader = reader
        self.description = reader.description
        self._generation = active.generation
        self._assembler.use_model(active.package, active.generation, max_chunk=max_chunk)
        self.alignment.use_model(active.package, active.generation)
        self._assembler.restart(reader.description.fs_hz)  # a new inlet starts a new sample count
        self.last_data_monotonic = time.monotonic()
        if recovered and self.state == StreamState.LOST:
            return  # recovered (and announced) by the first samples that arrive, in `_run`
        self.state, self.reason = StreamState.CONNECTED, ""
        event: StatusEvent = "stream_recovered" if recovered else "stream_connected"
        if recovered:
            self.recovered_count += 1
        self.ever_connected = True
        self._announce(event, self.stream_id,
                       f"{opened.name} ({opened.n_channels} ch, {opened.fs_hz:g} Hz; {mapping.describe()})",
                       opened.source_id)

    def _use_mapping(self, mapping: ChannelMapping) -> None:
        if mapping != self.mapping:
            log = logger.warning if mapping.notes or mapping.reordered else logger.info
            log("Stream %s: %s.", self.stream_id, mapping.describe())
        self.mapping = mapping

    def _recovered(self) -> None:
        """The first samples of a lost stream that was reopened: it is connected again."""
        desc = self.description
        self.state, self.reason = StreamState.CONNECTED, ""
        self.recovered_count += 1
        self.ever_connected = True
        detail = f"{desc.name} ({desc.n_channels} ch, {desc.fs_hz:g} Hz)" if desc else ""
        logger.info("Stream %s recovered.", self.stream_id)
        self._announce("stream_recovered", self.stream_id, detail, desc.source_id if desc else None)

    def _follow_model(self) -> None:
        """Adopt a newly activated model between two pulls; the windows already queued keep theirs."""
        active = self._models.active
        if active is None or active.generation == self._generation or self.description is None:
            return
        if self.state not in (StreamState.CONNECTED, StreamState.REFUSED):
            return
        if self.state == StreamState.REFUSED:
            info = self._refused_info
            self._generation = active.generation
            if info is None:
                return
            try:
                check_stream_basics(StreamDescription.from_info(info), active.package.metadata)
            except StreamMismatchError as exc:
                self._refuse(str(exc))
                return
            self._open(info, active, recovered=False)  # maps the channels from the full description
            return
        try:
            mapping = map_stream_channels(self.description, active.package.metadata, self.query.channels)
        except StreamMismatchError as exc:
            self._generation = active.generation
            self._close_reader()
            self._refuse(str(exc))
            return
        self._generation = active.generation
        reader = self._reader
        if reader is not None:
            reader.use_mapping(mapping)
        self._use_mapping(mapping)
        self._assembler.use_model(active.package, active.generation, max_chunk=self._max_chunk(active))
        self.alignment.use_model(active.package, active.generation)

    def _refuse(self, reason: str) -> None:
        logger.error("%s", reason)
        self.mapping = None
        self.state, self.reason = StreamState.REFUSED, reason
        self._generation = self._models.active.generation if self._models.active else 0
        self._announce("stream_refused", self.stream_id, reason,
                       self.description.source_id if self.description else None)

    def _mark_lost(self, reason: str) -> None:
        self._close_reader()
        self.idle_since_monotonic = time.monotonic()
        if self.state == StreamState.LOST:
            return
        self.state, self.reason = StreamState.LOST, reason
        self.lost_count += 1
        logger.warning("Stream %s lost: %s", self.stream_id, reason)
        self._announce("stream_lost", self.stream_id, reason, self.description.source_id if self.description else None)

    def _close_reader(self) -> None:
        with self._lock:
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    # ---- report ----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        desc = self.description
        quality = self._assembler.quality
        return {
            "stream_id": self.stream_id,
            "state": self.state,
            "reason": self.reason,
            "error": self.error,
            "name": desc.name if desc else None,
            "type": desc.type if desc else None,
            "source_id": desc.source_id if desc else None,
            "hostname": desc.hostname if desc else None,
            "n_channels": desc.n_channels if desc else None,
            "fs_hz": desc.fs_hz if desc else None,
            "channel_format": desc.channel_format if desc else None,
            "channel_labels": list(desc.channel_labels) if desc else [],
            "channel_mapping": self.mapping.to_dict() if self.mapping is not None else None,
            "samples_received": self.samples_received,
            "windows_emitted": self.windows_emitted,
            "lost_count": self.lost_count,
            "recovered_count": self.recovered_count,
            "last_lsl_time": self.last_lsl_time,
            "time_correction_s": None if np.isnan(self.time_correction_s) else self.time_correction_s,
            "model_generation": self._generation,
            "alignment": self.alignment.snapshot(),
            "quality": None if quality is None else {
                **quality.summary(),
                "channels": [
                    {"channel": ch.channel, "flags": list(ch.flags), "rms_uv": round(ch.rms_uv, 3),
                     "powerline_share": round(ch.powerline_share, 4), "lowband_uv": round(ch.lowband_uv, 2)}
                    for ch in quality.channels
                ],
            },
        }
