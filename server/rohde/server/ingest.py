"""Stream ingestion: one worker per LSL stream (the watchdog that finds and recovers them is in `watchdog`).

A `StreamWorker` owns one inlet and one thread: pulls into a preallocated buffer that wait in liblsl
for the samples of the next window (one wake-up per hop, not per outlet chunk), gap and overflow
counting from LSL timestamps, NaN/Inf handling, the live quality monitor, the shared causal
`StreamFilter`, and a `StreamWindower` (the ring buffer of filtered samples) that emits a window
every hop as a `WindowJob` on the inference queue.

A worker notices loss itself (LostError from liblsl, or no samples for `stale_after_s`), announces
it and waits for `attach` to hand it the stream again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rohde.core.errors import StreamMismatchError
from rohde.core.model_package import ModelPackage
from rohde.core.preprocessing import StreamFilter
from rohde.core.windows import StreamWindower
from rohde.server.inference import ActiveModel, ModelManager
from rohde.server.lsl_inlet import InletReader, StreamDescription, StreamQuery, check_stream_fits_model
from rohde.server.metrics import ServerMetrics
from rohde.server.quality import QualityMonitor, QualityThresholds
from rohde.server.threads import OwnedThread

logger = logging.getLogger(__name__)

# Worker states, as shown by /streams and /metrics.
CONNECTED, CONNECTING, LOST, REFUSED, STOPPED, WAITING = (
    "connected", "connecting", "lost", "refused", "stopped", "waiting_for_model"
)

Announce = Callable[[str, str, str, str | None], None]  # (event, stream_id, detail, source_id)


@dataclass(frozen=True)
class IngestConfig:
    buffer_s: int = 10  # liblsl inlet buffer length
    max_chunk_s: float = 0.5  # largest pull, in seconds of samples
    pull_interval_s: float = 0.002  # idle sleep after a pull that came back empty
    pull_wait_s: float = 0.1  # longest wait in liblsl for the next window's samples (> the largest gap between
    # window ends, so one wake per window); bounds how late a stop or a silent stream is seen
    stale_after_s: float = 1.0  # silence after which a connected stream is lost
    gap_tolerance_samples: int = 4  # timestamp jumps beyond this many periods are gaps
    reset_after_gap_ms: float = 100.0  # longer gaps restart the filter and the windows
    reject_bad_fraction: float = 0.5  # share of flat/saturated/non-finite channels that rejects a window
    open_timeout_s: float = 2.0  # how long to wait for an inlet to connect
    lsl_config: Path | None = None
    quality: QualityThresholds = field(default_factory=QualityThresholds)


@dataclass(frozen=True)
class WindowJob:
    """One window ready for the model."""

    stream_id: str
    generation: int  # the model generation it was prepared for; run with exactly that engine
    window: np.ndarray  # (n_channels, window_samples) float32, filtered and normalised
    end_index: int  # stream sample index (exclusive) at which the window ends
    lsl_time: float  # corrected LSL timestamp of the window's last sample
    pulled_at: float  # perf_counter() when the chunk holding its last sample was pulled
    bad_channels: tuple[int, ...]
    reject_reason: str | None  # nonfinite_input / bad_channels, or None
    flags: tuple[str, ...]


class JobQueue(queue.Queue[WindowJob]):
    """The bounded inference queue. When inference falls behind (more streams than the machine can
    serve), the oldest window is shed: a late decision is worthless for control, and the memory of an
    unbounded backlog grows without limit. Each shed window is counted for its stream."""

    def __init__(self, maxsize: int, metrics: ServerMetrics) -> None:
        if maxsize < 1:
            raise ValueError(f"The inference queue needs room for at least one window, got maxsize={maxsize}.")
        super().__init__(maxsize)
        self._metrics = metrics

    def offer(self, job: WindowJob) -> None:
        """Queue `job`, shedding the oldest queued windows while the queue is full."""
        while True:
            try:
                self.put_nowait(job)
                return
            except queue.Full:
                try:
                    shed = self.get_nowait()
                except queue.Empty:
                    continue  # the inference loop took one meanwhile: room again
                self._metrics.add("windows_shed", shed.stream_id)


def _signature(package: ModelPackage) -> tuple[Any, ...]:
    """What the filter and windower depend on; equal signatures let a swap keep their state."""
    meta = package.metadata
    return (meta.n_channels, meta.fs_hz, meta.window_samples, package.windows.hop_samples(meta.fs_hz),
            tuple(sorted(package.preprocessing.to_dict().items())))


class _Pipeline:
    """Filter + windower + timestamp ring for one stream under one model signature."""

    def __init__(self, package: ModelPackage, max_chunk: int) -> None:
        meta = package.metadata
        self.signature = _signature(package)
        self.filter = StreamFilter(package.preprocessing, meta.n_channels)
        self.window = meta.window_samples
        self.windower = StreamWindower(meta.n_channels, meta.window_samples, package.windows.hop_samples(meta.fs_hz))
        self.ts_capacity = self.windower.capacity + max_chunk
        self.timestamps = np.zeros(self.ts_capacity, dtype=np.float64)
        self.total = 0
        self.nonfinite_until = 0  # windows ending at or before this index contain a non-finite sample

    def reset(self) -> None:
        self.filter.reset()
        self.windower.reset()
        self.total = 0
        self.nonfinite_until = 0


class StreamWorker:
    """Owns one stream's inlet, thread and pipeline; `start`, `attach`, `stop` (idempotent)."""

    def __init__(self, stream_id: str, *, query: StreamQuery, models: ModelManager, jobs: JobQueue,
                 metrics: ServerMetrics, config: IngestConfig, announce: Announce) -> None:
        self.stream_id = stream_id
        self.query = query
        self._models = models
        self._jobs = jobs
        self._metrics = metrics
        self._config = config
        self._announce = announce
        self._lock = threading.Lock()
        self._thread = OwnedThread(self._run, name=f"rohde-stream-{stream_id}")
        self._stop = self._thread.stop_event
        self._reader: InletReader | None = None
        self._pending: StreamDescription | None = None
        self._pending_info: Any = None
        self.description: StreamDescription | None = None
        self.state = STOPPED
        self.reason = ""
        self.error: str | None = None
        self.ever_connected = False
        self.lost_count = 0
        self.recovered_count = 0
        self.samples_received = 0
        self.windows_emitted = 0
        self.last_data_monotonic = 0.0
        self.last_lsl_time: float | None = None
        self.time_correction_s: float = float("nan")
        self._generation = 0
        self._pipeline: _Pipeline | None = None
        self._quality: QualityMonitor | None = None
        self._normalization: Any = None
        self._prev_pull_full = False
        self._refused_info: Any = None  # kept so a later model that fits can open the stream

    # ---- ownership -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._thread.stop(timeout_s)
        with self._lock:
            self._close_reader()
            self.state = STOPPED

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
            if self.description and self.state in (CONNECTED, CONNECTING, REFUSED, WAITING):
                return self.description.uid
            return None

    def quality(self) -> QualityMonitor | None:
        return self._quality

    def refresh_time_correction(self) -> None:
        """Ask liblsl for the current clock offset (called by the watchdog, not the pulling thread)."""
        reader = self._reader
        if reader is not None and self.state == CONNECTED:
            self.time_correction_s = reader.time_correction()

    # ---- thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._take_pending()
                self._follow_model()
                reader = self._reader
                if reader is None or self.state != CONNECTED:
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
                    if now - self.last_data_monotonic > self._config.stale_after_s:
                        self._mark_lost(f"no samples for {self._config.stale_after_s:g} s")
                    else:
                        self._stop.wait(self._config.pull_interval_s)
                    continue
                self.last_data_monotonic = now
                self._process(samples, stamps, full=len(stamps) == reader.max_chunk)
        except Exception as exc:  # surfaced in /health; the watchdog reports the dead thread
            logger.exception("Stream worker %s failed.", self.stream_id)
            self.error = f"{type(exc).__name__}: {exc}"
            self.state = STOPPED

    def _samples_wanted(self, max_chunk: int) -> int:
        """How many samples a pull waits for: those missing until the next window end, since no decision
        can come sooner; the thread then wakes once per hop instead of once per outlet chunk."""
        pipe = self._pipeline  # the current model's windows: a swap that changes them changes this count
        missing = 1 if pipe is None else pipe.windower.samples_until_next_window
        return min(missing, max_chunk)

    def _take_pending(self) -> None:
        with self._lock:
            info, desc = self._pending_info, self._pending
            if info is None or desc is None:
                return
            self._pending_info = self._pending = None
            # Description and state change together, under the lock `uid` reads, so the watchdog
            # never sees this stream unattached and gives it a second worker.
            was_lost = self.state == LOST or (self.state in (CONNECTING, WAITING) and self.ever_connected)
            self.description = desc
            self.state = CONNECTING
        self._close_reader()
        active = self._models.active
        if active is None:
            with self._lock:
                self.state, self.reason = WAITING, "no active model"
                if self._pending_info is None:  # retried once a model is active
                    self._pending_info, self._pending = info, desc
            self._stop.wait(0.2)
            return
        try:
            check_stream_fits_model(desc, active.package.metadata)
        except StreamMismatchError as exc:
            self._refused_info = info
            self._refuse(str(exc))
            return
        self._open(info, active, recovered=was_lost)

    def _open(self, info: Any, active: ActiveModel, *, recovered: bool) -> None:
        opened = StreamDescription.from_info(info)
        meta = active.package.metadata
        max_chunk = max(64, int(self._config.max_chunk_s * meta.fs_hz))
        try:
            reader = InletReader(info, buffer_s=self._config.buffer_s, max_chunk=max_chunk,
                                 lsl_config=self._config.lsl_config)
            reader.open(self._config.open_timeout_s)
        except Exception as exc:  # liblsl raises TimeoutError or RuntimeError when the outlet vanished
            self._mark_lost(f"could not open inlet: {exc}")
            return
        self._reader = reader
        self.description = reader.description  # now with the desc (channel labels)
        self._install_pipeline(active, max_chunk)
        self.state, self.reason = CONNECTED, ""
        self.last_data_monotonic = time.monotonic()
        self.last_lsl_time = None
        event = "stream_recovered" if recovered else "stream_connected"
        if recovered:
            self.recovered_count += 1
        self.ever_connected = True
        self._announce(event, self.stream_id,
                       f"{opened.name} ({opened.n_channels} ch, {opened.fs_hz:g} Hz)",
                       opened.source_id)

    def _install_pipeline(self, active: ActiveModel, max_chunk: int) -> None:
        package = active.package
        if self._pipeline is None or self._pipeline.signature != _signature(package):
            self._pipeline = _Pipeline(package, max_chunk)
            self._quality = QualityMonitor(package.metadata.n_channels, package.metadata.fs_hz,
                                           self._config.quality)
        else:
            self._pipeline.reset()  # a new inlet starts a new sample count
        self._normalization = package.normalization
        self._generation = active.generation
        self._prev_pull_full = False

    def _follow_model(self) -> None:
        """Adopt a newly activated model between two chunks; the windows already queued keep theirs."""
        active = self._models.active
        if active is None or active.generation == self._generation or self.description is None:
            return
        if self.state not in (CONNECTED, REFUSED):
            return
        try:
            check_stream_fits_model(self.description, active.package.metadata)
        except StreamMismatchError as exc:
            self._generation = active.generation
            self._close_reader()
            self._refuse(str(exc))
            return
        if self.state == REFUSED:
            info = self._refused_info
            self._generation = active.generation
            if info is not None:
                self._open(info, active, recovered=False)
            return
        package = active.package
        if self._pipeline is not None and self._pipeline.signature == _signature(package):
            # Same filter and windows: keep the state, so the swap loses no window.
            self._normalization = package.normalization
            self._generation = active.generation
        else:
            meta = package.metadata
            self._install_pipeline(active, max(64, int(self._config.max_chunk_s * meta.fs_hz)))

    def _refuse(self, reason: str) -> None:
        logger.error("%s", reason)
        self.state, self.reason = REFUSED, reason
        self._generation = self._models.active.generation if self._models.active else 0
        self._announce("stream_refused", self.stream_id, reason,
                       self.description.source_id if self.description else None)

    def _mark_lost(self, reason: str) -> None:
        self._close_reader()
        if self.state == LOST:
            return
        self.state, self.reason = LOST, reason
        self.lost_count += 1
        logger.warning("Stream %s lost: %s", self.stream_id, reason)
        self._announce("stream_lost", self.stream_id, reason, self.description.source_id if self.description else None)

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    # ---- per pull -------------------------------------------------------------------------------
    def _process(self, samples: np.ndarray, stamps: np.ndarray, *, full: bool) -> None:
        """One pull, which spans several outlet chunks: a gap can fall inside it, so the runs between
        gaps go through one by one, each gap is counted and a long one restarts the windows where it is."""
        pulled_at = time.perf_counter()
        for start, stop in self._runs(stamps):
            if start > 0:
                self._prev_pull_full = False  # a gap inside one pull is the source's, not an overflow
            self._process_run(samples[start:stop], stamps[start:stop], pulled_at)
        self._prev_pull_full = full

    def _runs(self, stamps: np.ndarray) -> list[tuple[int, int]]:
        """Index ranges `[start, stop)` of `stamps` `(n,)` with no gap inside."""
        if self.description is None:
            return [(0, len(stamps))]
        cuts = (np.flatnonzero(np.diff(stamps) > self._max_step_s(self.description)) + 1).tolist()
        bounds = [0, *cuts, len(stamps)]
        return list(zip(bounds[:-1], bounds[1:], strict=True))

    def _process_run(self, samples: np.ndarray, stamps: np.ndarray, pulled_at: float) -> None:
        pipe = self._pipeline
        quality = self._quality
        if pipe is None or quality is None:
            return
        n = len(stamps)
        self.samples_received += n
        self._check_gap(stamps[0], pipe)
        self.last_lsl_time = float(stamps[-1])

        finite = np.isfinite(samples)
        bad_channels_nf: np.ndarray | None = None
        if not finite.all():
            # NaN in the filter state would poison every later sample: zero them, flag the windows.
            n_bad = int((~finite).sum())
            self._metrics.add("nonfinite_samples", self.stream_id, n_bad)
            samples = np.where(finite, samples, np.float32(0.0))
            bad_channels_nf = ~finite.all(axis=0)
            last_bad = int(np.nonzero(~finite.all(axis=1))[0][-1])
            pipe.nonfinite_until = pipe.total + last_bad + 1 + pipe.window

        idx = (pipe.total + np.arange(n)) % pipe.ts_capacity
        pipe.timestamps[idx] = stamps
        pipe.total += n
        ready = pipe.windower.push(pipe.filter.process(samples))
        if not ready:
            quality.push(samples, bad_channels_nf)
            return
        bad = tuple(quality.bad_channels)
        hard_fraction = quality.hard_bad_fraction()
        for end, window in ready:
            flags: list[str] = []
            reason = None
            if end <= pipe.nonfinite_until:
                flags.append("nonfinite")
                reason = "nonfinite_input"
            elif hard_fraction > self._config.reject_bad_fraction:
                flags.append("bad_channels")
                reason = "bad_channels"
            normalized = self._normalization.apply(window.T).T  # (C, W)
            job = WindowJob(
                stream_id=self.stream_id, generation=self._generation,
                window=np.ascontiguousarray(normalized, dtype=np.float32), end_index=end,
                lsl_time=float(pipe.timestamps[(end - 1) % pipe.ts_capacity]), pulled_at=pulled_at,
                bad_channels=bad, reject_reason=reason, flags=tuple(flags),
            )
            self._jobs.offer(job)
            self.windows_emitted += 1
        # The quality estimate (an FFT of every channel, a few ms) runs after the windows are queued, so it
        # never delays a decision; their bad-channel list is the estimate of the pull before.
        quality.push(samples, bad_channels_nf)

    def _max_step_s(self, desc: StreamDescription) -> float:
        """The longest step between two timestamps that is not a gap."""
        return (1 + self._config.gap_tolerance_samples) / desc.fs_hz

    def _check_gap(self, first_stamp: float, pipe: _Pipeline) -> None:
        last = self.last_lsl_time
        if last is None or self.description is None:
            return
        period = 1.0 / self.description.fs_hz
        delta = first_stamp - last
        if delta <= self._max_step_s(self.description):
            return
        missing = int(round(delta / period)) - 1
        self._metrics.add("gaps", self.stream_id)
        self._metrics.add("missing_samples", self.stream_id, missing)
        if self._prev_pull_full:
            # We were behind (the last pull filled the buffer), so liblsl dropped the oldest samples.
            self._metrics.add("overflows", self.stream_id)
        logger.info("Stream %s: gap of %.1f ms (%d samples).", self.stream_id, delta * 1000, missing)
        if delta * 1000 > self._config.reset_after_gap_ms:
            pipe.reset()

    def snapshot(self) -> dict[str, Any]:
        desc = self.description
        quality = self._quality
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
            "samples_received": self.samples_received,
            "windows_emitted": self.windows_emitted,
            "lost_count": self.lost_count,
            "recovered_count": self.recovered_count,
            "last_lsl_time": self.last_lsl_time,
            "time_correction_s": None if np.isnan(self.time_correction_s) else self.time_correction_s,
            "model_generation": self._generation,
            "quality": None if quality is None else {
                **quality.summary(),
                "channels": [
                    {"channel": ch.channel, "flags": list(ch.flags), "rms_uv": round(ch.rms_uv, 3),
                     "powerline_share": round(ch.powerline_share, 4), "lowband_uv": round(ch.lowband_uv, 2)}
                    for ch in quality.channels
                ],
            },
        }
