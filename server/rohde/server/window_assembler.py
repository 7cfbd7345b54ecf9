"""One stream's signal path: raw samples and LSL timestamps in, `WindowJob`s out.

A `WindowAssembler` splits each pull at timestamp gaps and counts them (a long gap restarts the
filter and the windows where it falls), replaces samples outside the physical input range
(non-finite, or beyond `IngestConfig.max_abs_uv`) before they reach the causal `StreamFilter`, keeps
the filtered samples in a `StreamWindower`, feeds the raw samples to the `QualityMonitor`, and emits
every ready window normalised and flagged (non-finite or out-of-range input, too many bad channels).
It knows nothing of LSL or threads: the stream worker pushes what it pulled.

Recovery after bad input. A bad sample is replaced by its channel's last good sample, so the filter
sees the signal stop rather than jump (to zero, a step of the electrode's DC offset, hundreds of uV,
which rings through the band-pass and notches for about a second). Every window holding a bad sample
is rejected, so the first window accepted again ends one window (`window_samples`) after the last bad
sample, and by then the filter has settled. Measured on 5 uV noise with a 300 uV offset after 2.5 s of
1e30 uV on every channel (1 kHz, 200 ms windows, 20-450 Hz band-pass, 50 Hz notches): the first window
after the burst differs from the same window of the clean stream by 19 % of its RMS, 7 % 50 ms later,
1 % after 350 ms (zeroing the burst instead: 730 %, still 38 % a window later). The quality monitor
sees the held samples as flat and the bad channels as non-finite for `quality_window_s`, so it rejects
the windows as `bad_channels` until its first estimate past that, which the windows of the next pull
see: decisions are accepted again 550 ms after the burst in this case, and at most `quality_window_s`
+ `quality_interval_s` + two pulls after it (a pull is a hop when the server keeps up: 0.85 s with the
defaults). Live (`tests/server/test_signal_faults.py`): 0.7-0.8 s.

Hard faults at once. The quality monitor estimates every `quality_interval_s` over `quality_window_s`, so
on its own it would accept up to half a second of windows after every lead goes flat or every channel hits
the rail. Each run of a pull is therefore also checked directly, in blocks of one period of the band-pass's
high-pass corner (50 samples at 20 Hz and 1 kHz; the oldest block reaches back into the previous run): a
channel is flat in a block when its raw peak-to-peak stays below `flat_std_uv` (any signal in the EMG band
swings over its amplitude within one such period), saturated when some |sample| reaches `saturation_uv`.
When more than `reject_bad_fraction` of the channels are either in a block, every window holding a sample
of it is rejected as `bad_channels`, and so are the windows ending within one more period of the high-pass
corner: the step back from a rail or from zero to the electrode's offset rings through the high-pass for
about that long (the chain's step response falls below 10 % of the step within 62 ms at 20 Hz).

Timestamp jitter is not loss. An outlet or driver that stamps blocks on arrival makes the stamps jump late
and back (a loaded machine delays a push by tens of ms), while lost samples shift every later stamp for good.
A jump beyond `gap_tolerance_samples` sample periods is therefore judged by the sample grid: each stamp
minus its sample index over the rate is the grid's offset plus that sample's lateness, so the smallest such
value over a stretch is the grid (the least late sample is on it). The grid over the `jitter_tolerance_ms`
after the jump minus the grid over the same time before it (back to the previous jump at most, so no loss
is counted twice) is what was lost: counted when it exceeds the tolerance too, nothing when the stamps came
back. Drift moves the grid by a fraction of a sample in that time. A jump beyond `reset_after_gap_ms` is a
silence that restarts the windows, counted at once.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rohde.core.channel_repair import QUALITY_MASKING_KEY, ChannelRepair
from rohde.core.model_package import ModelPackage
from rohde.core.preprocessing import StreamFilter
from rohde.core.quality_monitor import QualityMonitor
from rohde.core.windows import StreamWindower, ring_write
from rohde.server.ingest_config import IngestConfig
from rohde.server.jobs import WindowJob
from rohde.server.metrics import ServerMetrics, StreamCounter
from rohde.server.threads import SharedThread

logger = logging.getLogger(__name__)

# One thread judges the channels of every stream against their neighbours (a few ms per stream and second):
# a stream's windows never wait behind its own detector run, which under load stretched to tens of ms.
NEIGHBOUR_POOL = SharedThread("neighbours")


def model_signature(package: ModelPackage) -> tuple[Any, ...]:
    """What the filter and windower depend on; equal signatures let a swap keep their state."""
    meta = package.metadata
    return (meta.n_channels, meta.fs_hz, meta.window_samples, package.windows.hop_samples(meta.fs_hz),
            tuple(sorted(package.preprocessing.to_dict().items())))


@dataclass
class _Jump:
    """A timestamp jump waiting to be told apart from jitter (times in LSL seconds)."""

    grid_before: float  # the sample grid's offset before the jump
    deadline: float  # the grid after it is measured until this stamp
    overflow: bool  # the pull before it filled the pull buffer
    grid_after: float = float("inf")


class _SignalState:
    """Filter, windower and timestamp ring for one stream under one model signature."""

    def __init__(self, package: ModelPackage, max_chunk: int) -> None:
        meta = package.metadata
        self.signature = model_signature(package)
        self.filter = StreamFilter(package.preprocessing, meta.n_channels)
        self.window = meta.window_samples
        self.windower = StreamWindower(meta.n_channels, meta.window_samples, package.windows.hop_samples(meta.fs_hz))
        self.ts_capacity = self.windower.capacity + max_chunk
        self.timestamps = np.zeros(self.ts_capacity, dtype=np.float64)
        self.max_chunk = max_chunk
        self.total = 0  # samples pushed since the last restart
        self.nonfinite_until = 0  # windows ending at or before this index contain a non-finite sample
        self.out_of_range_until = 0  # ... a finite sample beyond the physical input range
        # Windows ending after `hard_fault_from` and at or before `hard_fault_until` hold a sample of a block with
        # too many flat or saturated channels, or end while the filter rings after one.
        self.hard_fault_from = 0
        self.hard_fault_until = 0
        self.hard_fault_channels: tuple[int, ...] = ()  # the channels flat or saturated in the last such block
        # One period of the high-pass corner, in samples: the block length of the hard-fault check and the
        # settling margin after a hard fault (see the module docstring).
        self.settle = int(np.ceil(meta.fs_hz / package.preprocessing.effective_band_hz[0]))
        self.raw_tail = np.zeros((0, meta.n_channels), dtype=np.float32)  # the last `settle` raw samples
        # Each channel's last good raw sample, which stands in for its bad ones.
        self.last_good = np.zeros(meta.n_channels, dtype=np.float32)

    def reset(self) -> None:
        self.filter.reset()
        self.windower.reset()
        self.total = 0
        self.nonfinite_until = 0
        self.out_of_range_until = 0
        self.hard_fault_from = 0
        self.hard_fault_until = 0
        self.hard_fault_channels = ()
        self.raw_tail = self.raw_tail[:0]


class WindowAssembler:
    """Turns one stream's `(n, n_channels)` float32 samples and `(n,)` LSL timestamps into windows.

    `use_model` sets the model the windows are prepared for, `restart` begins a new inlet, `push`
    takes each pull and hands every ready window to `emit`, in stream order.
    """

    def __init__(self, stream_id: str, *, config: IngestConfig, metrics: ServerMetrics,
                 emit: Callable[[WindowJob], None]) -> None:
        self.stream_id = stream_id
        self._config = config
        self._metrics = metrics
        self._emit = emit
        self._signal: _SignalState | None = None
        self._quality: QualityMonitor | None = None
        self._repair: ChannelRepair | None = None  # set by use_model for models trained with quality masking
        self._scale: np.ndarray | None = None  # (n_channels,) float32: the normalisation's divisor per channel
        self._generation = 0
        self._fs_hz: float | None = None  # the stream's nominal rate, for the gap check
        self._prev_pull_full = False  # the last pull filled the pull buffer: we were behind
        self._jumps: list[_Jump] = []  # jumps not yet told apart from jitter
        # (last stamp, least stamp - index / rate) of each run since the last jump, over `jitter_tolerance_ms`
        self._grid_before: deque[tuple[float, float]] = deque()
        self.samples_received = 0
        self.windows_emitted = 0
        self.out_of_range_samples = 0  # finite samples beyond `max_abs_uv`, replaced before the filter
        self.filter_resets = 0  # times the filter state was found non-finite and restarted
        self.last_lsl_time: float | None = None  # timestamp of the last sample pushed

    @property
    def quality(self) -> QualityMonitor | None:
        return self._quality

    @property
    def samples_until_next_window(self) -> int:
        """Samples still missing until the next window end (1 before any model is set)."""
        return 1 if self._signal is None else self._signal.windower.samples_until_next_window

    def use_model(self, package: ModelPackage, generation: int, *, max_chunk: int) -> None:
        """Prepare the next windows for `package` (model `generation`). A model with the same filter and
        windows keeps their state, so the swap loses no window; any other starts them afresh."""
        if self._signal is None or self._signal.signature != model_signature(package):
            self._signal = _SignalState(package, max_chunk)
            self._quality = QualityMonitor(package.metadata.n_channels, package.metadata.fs_hz,
                                           self._config.quality, layout=package.layout,
                                           removed_hz=package.preprocessing.notch_frequencies(),
                                           executor=NEIGHBOUR_POOL if self._config.neighbour_thread else None)
            self._prev_pull_full = False
        # A model trained to expect it gets its windows' bad channels rebuilt from their neighbours.
        wants_repair = bool(package.metadata.training_data.get(QUALITY_MASKING_KEY, False))
        self._repair = ChannelRepair(package.layout) if wants_repair else None
        self._scale = np.asarray(package.normalization.scale_uv, dtype=np.float32)
        self._generation = generation

    def restart(self, fs_hz: float) -> None:
        """A new inlet at nominal rate `fs_hz`: a new sample count and clock, so the filter and the
        windows start again and no gap is measured against the stream before."""
        if self._signal is not None:
            self._signal.reset()
        if self._fs_hz is not None:
            self._resolve_jumps(self._fs_hz, float("inf"))  # judged on what the old inlet delivered
        self._grid_before.clear()
        self._fs_hz = fs_hz
        self._prev_pull_full = False
        self.last_lsl_time = None

    def push(self, samples: np.ndarray, stamps: np.ndarray, *, pulled_at: float, full: bool) -> None:
        """Take one pull: `samples` `(n, n_channels)` float32 uV, `stamps` `(n,)` LSL seconds,
        `pulled_at` its `perf_counter()` time, `full` whether it filled the pull buffer.

        A pull spans several outlet chunks, so a gap can fall inside it: the runs between gaps go
        through one by one, each gap is counted and a long one restarts the windows where it is."""
        if self._fs_hz is None:
            raise RuntimeError(f"Stream {self.stream_id}: call restart(fs_hz) before pushing samples.")
        if len(stamps) == 0:
            return
        for start, stop in self._runs(stamps, self._fs_hz):
            if start > 0:
                self._prev_pull_full = False  # a gap inside one pull is the source's, not an overflow
            # The timestamp ring holds one pull beyond the windows: a longer burst goes through in slices.
            step = self._signal.max_chunk if self._signal is not None else stop - start
            for first in range(start, stop, step):
                last = min(first + step, stop)
                self._push_run(samples[first:last], stamps[first:last], pulled_at, self._fs_hz)
        self._prev_pull_full = full

    def _max_step_s(self, fs_hz: float) -> float:
        """The longest step between two timestamps that is no jump to judge."""
        return (1 + self._config.gap_tolerance_samples) / fs_hz

    def _runs(self, stamps: np.ndarray, fs_hz: float) -> list[tuple[int, int]]:
        """Index ranges `[start, stop)` of `stamps` `(n,)` with no gap inside."""
        cuts = (np.flatnonzero(np.diff(stamps) > self._max_step_s(fs_hz)) + 1).tolist()
        bounds = [0, *cuts, len(stamps)]
        return list(zip(bounds[:-1], bounds[1:], strict=True))

    def _push_run(self, samples: np.ndarray, stamps: np.ndarray, pulled_at: float, fs_hz: float) -> None:
        sig, quality, scale = self._signal, self._quality, self._scale
        if sig is None or quality is None or scale is None:
            raise RuntimeError(f"Stream {self.stream_id}: call use_model before pushing samples.")
        n = len(stamps)
        self._check_gap(stamps, sig, fs_hz)
        self.samples_received += n
        self.last_lsl_time = float(stamps[-1])

        samples, replaced_channels, last_nonfinite, last_out_of_range = self._replace_bad_samples(samples, sig)
        filtered = sig.filter.process(samples)
        if not np.isfinite(filtered).all():
            # The input is finite and bounded here, so only a corrupt filter state gets here; it would
            # poison every later window. Start the filter and the windows afresh on this run.
            self.filter_resets += 1
            logger.warning("Stream %s: the filter state became non-finite; restarting the filter and windows.",
                           self.stream_id)
            sig.reset()
            filtered = sig.filter.process(samples)
        # The windows holding sample i of this run end after it and at or before `sig.total + i + window`.
        if last_nonfinite >= 0:
            sig.nonfinite_until = sig.total + last_nonfinite + sig.window
        if last_out_of_range >= 0:
            sig.out_of_range_until = sig.total + last_out_of_range + sig.window
        hard_fault = self._check_hard_faults(samples, sig)
        if hard_fault is not None:
            first, last = hard_fault
            if sig.hard_fault_until <= sig.total:  # the last mark covers no window of this run: a new fault
                sig.hard_fault_from = sig.total + first
            sig.hard_fault_until = sig.total + last + sig.window + sig.settle
        ring_write(sig.timestamps, sig.total, stamps)
        sig.total += n
        # Each window comes normalised (filtered uV / scale, as `Normalization.apply`) in one copy from the ring.
        ready = sig.windower.push(filtered, scale=scale)
        if not ready:
            quality.push(samples, replaced_channels)
            return
        bad = tuple(quality.bad_channels)
        to_repair = tuple(quality.repair_channels)  # the bad channels whose fault reaches the model
        hard_fraction = quality.hard_bad_fraction()
        for end, window in ready:
            flags: list[str] = []
            reason = None
            if end <= sig.out_of_range_until:
                flags.append("out_of_range")
                reason = "out_of_range_input"
            if end <= sig.nonfinite_until:
                flags.append("nonfinite")
                reason = "nonfinite_input"
            in_hard_fault = sig.hard_fault_from < end <= sig.hard_fault_until
            if reason is None and (in_hard_fault or hard_fraction > self._config.reject_bad_fraction):
                flags.append("bad_channels")
                reason = "bad_channels"
            # The estimate may not know the faulty channels yet: the window names those the check found.
            faulty = sig.hard_fault_channels if in_hard_fault else ()
            window_bad, rebuilt = (tuple(sorted({*c, *faulty})) if faulty else c for c in (bad, to_repair))
            normalized = window  # (C, W) float32, C-contiguous, a fresh array
            if self._repair is not None and rebuilt and reason is None:
                normalized = np.ascontiguousarray(self._repair.rebuild_channels(normalized, rebuilt),
                                                  dtype=np.float32)
            self._emit(WindowJob(
                stream_id=self.stream_id, generation=self._generation, window=normalized, end_index=end,
                lsl_time=float(sig.timestamps[(end - 1) % sig.ts_capacity]), pulled_at=pulled_at,
                bad_channels=window_bad, reject_reason=reason, flags=tuple(flags),
            ))
            self.windows_emitted += 1
        # The quality estimate (an FFT of every channel, a few ms) runs after the windows are emitted, so it
        # never delays a decision; their bad-channel list is the estimate of the pull before.
        quality.push(samples, replaced_channels)

    def _check_hard_faults(self, samples: np.ndarray, sig: _SignalState) -> tuple[int, int] | None:
        """Check `(n, n_channels)` finite raw `samples` for flat and saturated channels, in blocks of
        `sig.settle` samples aligned on the run's end (the oldest block completed from `sig.raw_tail`).
        Returns the indices in the run of the first sample of the first block and of the last sample of the
        last block in which more than `reject_bad_fraction` of the channels are flat or saturated (the first
        is negative when that block reaches back into the run before), or None when no block is; records
        the last such block's channels."""
        n, span, thresholds = len(samples), sig.settle, self._config.quality
        tail = sig.raw_tail
        held = len(tail)
        n_blocks = -(-n // span)
        ends = n - span * np.arange(n_blocks - 1, -1, -1)  # block ends in the run, oldest first
        starts = np.maximum(ends - span, 0)
        # The oldest block is the partial one; the others are whole periods, reduced as one (n_blocks - 1, span, C)
        # view (reductions along a short axis, much cheaper than `reduceat`).
        head, body = samples[: ends[0]], samples[ends[0] :].reshape(n_blocks - 1, span, samples.shape[1])
        high = np.concatenate([head.max(axis=0)[None], body.max(axis=1)])  # (n_blocks, n_channels)
        low = np.concatenate([head.min(axis=0)[None], body.min(axis=1)])
        reach = min(span - int(ends[0] - starts[0]), held)  # samples of the run before that the oldest block takes
        if reach > 0:
            np.maximum(high[0], tail[held - reach :].max(axis=0), out=high[0])
            np.minimum(low[0], tail[held - reach :].min(axis=0), out=low[0])
        # The last `span` raw samples, for the next run's oldest block.
        sig.raw_tail = samples[-span:].copy() if n >= span else np.concatenate([tail[max(held - (span - n), 0) :],
                                                                                  samples])
        lengths = ends - starts
        lengths[0] += reach
        # A block shorter than one period (just after a restart) cannot tell a flat lead from a slow swing.
        flat = ((high - low) < thresholds.flat_std_uv) & (lengths >= span)[:, None]
        bad = flat | (high >= thresholds.saturation_uv) | (low <= -thresholds.saturation_uv)
        faulty = np.flatnonzero(np.count_nonzero(bad, axis=1) / bad.shape[1] > self._config.reject_bad_fraction)
        if faulty.size == 0:
            return None
        first, last = int(faulty[0]), int(faulty[-1])
        sig.hard_fault_channels = tuple(np.flatnonzero(bad[last]).tolist())
        return int(starts[first]) - (reach if first == 0 else 0), int(ends[last]) - 1

    def _replace_bad_samples(self, samples: np.ndarray,
                             sig: _SignalState) -> tuple[np.ndarray, np.ndarray | None, int, int]:
        """Replace the non-finite and out-of-range samples of `(n, n_channels)` `samples` by their
        channel's last good sample and count them. Returns the samples, the `(n_channels,)` mask of
        channels that had bad ones (None when none had), and the index in the run of its last
        non-finite sample and of its last out-of-range one (-1: none)."""
        limit = np.float32(self._config.max_abs_uv)
        # The common case in two reductions and no temporary: max and min are NaN when any sample is, which
        # fails both comparisons.
        if samples.max() <= limit and samples.min() >= -limit:
            sig.last_good = samples[-1].copy()
            return samples, None, -1, -1
        # NaN compares False, so `good` is False for non-finite samples too.
        good = np.abs(samples) <= limit
        finite = np.isfinite(samples)
        out_of_range = ~good & finite
        last_nonfinite = last_out_of_range = -1
        n_nonfinite = int((~finite).sum())
        if n_nonfinite:
            # NaN in the filter state would poison every later sample.
            self._metrics.add(StreamCounter.NONFINITE_SAMPLES, self.stream_id, n_nonfinite)
            last_nonfinite = int(np.flatnonzero(~finite.all(axis=1))[-1])
        if out_of_range.any():
            # Finite but beyond any real EMG: carried by the filter state, a burst would ring for seconds.
            self.out_of_range_samples += int(out_of_range.sum())
            last_out_of_range = int(np.flatnonzero(out_of_range.any(axis=1))[-1])
        # Forward fill: each bad sample takes its channel's last good one (from an earlier pull if none yet).
        source = np.where(good, np.arange(len(samples))[:, None], -1)  # (n, n_channels)
        np.maximum.accumulate(source, axis=0, out=source)
        filled = np.take_along_axis(samples, np.maximum(source, 0), axis=0)
        filled = np.where(source >= 0, filled, sig.last_good[None, :]).astype(np.float32, copy=False)
        sig.last_good = filled[-1].copy()
        return filled, ~good.all(axis=0), last_nonfinite, last_out_of_range

    def _check_gap(self, stamps: np.ndarray, sig: _SignalState, fs_hz: float) -> None:
        """Judge the step into this run's `(n,)` `stamps` and follow the pending jumps (module docstring)."""
        grid = stamps - (self.samples_received + np.arange(len(stamps))) / fs_hz  # (n,) grid offset + lateness
        horizon_s = self._config.jitter_tolerance_ms / 1000.0
        last = self.last_lsl_time
        delta = float(stamps[0]) - last if last is not None else 0.0
        if last is not None and delta > self._max_step_s(fs_hz):
            if delta * 1000 > self._config.reset_after_gap_ms:
                self._resolve_jumps(fs_hz, float("inf"))  # judged on the stamps before the silence
                self._count_gap(int(round(delta * fs_hz)) - 1, delta, overflow=self._prev_pull_full)
                sig.reset()
            elif self._grid_before:
                before = min(offset for _, offset in self._grid_before)
                self._jumps.append(_Jump(grid_before=before, deadline=float(stamps[0]) + horizon_s,
                                         overflow=self._prev_pull_full))
            self._grid_before.clear()
        for jump in self._jumps:
            within = stamps <= jump.deadline
            if within.any():
                jump.grid_after = min(jump.grid_after, float(grid[within].min()))
        self._resolve_jumps(fs_hz, float(stamps[-1]))
        self._grid_before.append((float(stamps[-1]), float(grid.min())))
        while self._grid_before[0][0] < stamps[-1] - horizon_s:
            self._grid_before.popleft()

    def _resolve_jumps(self, fs_hz: float, now: float) -> None:
        """Judge the pending jumps whose time to come back ended before the stamp `now`: a gap when the
        grid stayed later by more than the tolerance, else jitter."""
        for jump in [j for j in self._jumps if j.deadline < now]:
            self._jumps.remove(jump)
            missing = int(round((jump.grid_after - jump.grid_before) * fs_hz))
            if missing > self._config.gap_tolerance_samples:
                self._count_gap(missing, jump.grid_after - jump.grid_before, overflow=jump.overflow)

    def _count_gap(self, missing: int, lost_s: float, *, overflow: bool) -> None:
        self._metrics.add(StreamCounter.GAPS, self.stream_id)
        self._metrics.add(StreamCounter.MISSING_SAMPLES, self.stream_id, missing)
        if overflow:
            # We were behind (the last pull filled the buffer), so liblsl dropped the oldest samples.
            self._metrics.add(StreamCounter.OVERFLOWS, self.stream_id)
        logger.info("Stream %s: gap of %.1f ms (%d samples).", self.stream_id, lost_s * 1000, missing)
