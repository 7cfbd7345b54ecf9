"""Simulated and replayed amplifiers: LSL outlets that behave like real hardware.

`LslAmplifier` pushes a `ChunkSource` in real time: chunks of `chunk_ms` at the nominal rate,
float32 uV by default, channel labels, units and the electrode layout (JSON) in the stream's `desc`, and a
second stream (type `Markers`, 3 string channels: gesture name, condition, index of the sample in
the stream, so a subscriber can place every window in the source exactly) with the true gesture and
condition, pushed whenever either changes and stamped with the time of the sample where it changes,
and repeated every `marker_repeat_s` so that a subscriber that joins late learns the truth soon.
Timestamps are regular: sample i of the stream carries `t0 + i / fs_hz`.

To act like the amplifiers RoHDE meets (see `rohde.core.channel_map`), the outlet can append
counter/trigger-like channels (`extra_channels`: `Counter`, the sample index; `Trigger`, the true
gesture index; then `AUXn`, zero; each typed as such in the desc), publish its channels in another order
(`shuffle_seed`: the labels and the desc's layout follow the channels, so a reader can undo it), and send
`float32` uV, `double64` V, `int32` nV or `int16` in 0.5 uV steps (`channel_format`; the desc's unit says
which, so the values are correct once scaled; integers are rounded and clipped to their range).

Sources: `SimulatorSource` (the embedded `rohde.simulation.simulator.LiveSimulator`, with its gesture
and disturbance schedule) and `RecordingSource` (any loaded `Recording`, looped).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rohde.core.errors import ConfigError
from rohde.core.layouts import NO_ELECTRODE, ElectrodeGrid, ElectrodeLayout
from rohde.core.recording import Recording
from rohde.server.lsl_inlet import import_pylsl

logger = logging.getLogger(__name__)

UNUSABLE_MARKER = "pause"  # a cue naming no gesture: readers label the samples unusable


@dataclass(frozen=True)
class SampleFormat:
    """How an outlet sends uV: its LSL channel format, the unit its desc names, and the factor uV -> unit."""

    lsl_format: str
    unit: str
    per_uv: float
    dtype: Any


SAMPLE_FORMATS = {
    "float32": SampleFormat("float32", "microvolts", 1.0, np.float32),
    "double64": SampleFormat("double64", "volts", 1e-6, np.float64),
    "int32": SampleFormat("int32", "nanovolts", 1e3, np.int32),  # 1 nV steps, +-2.1 V
    "int16": SampleFormat("int16", "0.5 microvolts", 2.0, np.int16),  # 0.5 uV steps, +-16.4 mV
}
EXTRA_CHANNELS = (("Counter", "Counter", "counts"), ("Trigger", "Trigger", ""))  # then AUXn (type AUX, V)


@dataclass(frozen=True)
class SourceChunk:
    samples: np.ndarray  # (n, n_channels) float32 uV
    labels: np.ndarray  # (n,) int16 gesture index, -1 unusable
    condition: str  # condition in force for this chunk


class ChunkSource(Protocol):
    @property
    def fs_hz(self) -> float: ...
    @property
    def n_channels(self) -> int: ...
    @property
    def layout(self) -> ElectrodeLayout: ...
    @property
    def gesture_names(self) -> Sequence[str]: ...
    def read(self, n_samples: int) -> SourceChunk: ...


class RecordingSource:
    """Plays a `Recording` from memory, looping at its end."""

    def __init__(self, recording: Recording, *, loop: bool = True) -> None:
        self.recording = recording
        self.loop = loop
        self._pos = 0

    @property
    def fs_hz(self) -> float:
        return self.recording.fs_hz

    @property
    def n_channels(self) -> int:
        return self.recording.n_channels

    @property
    def layout(self) -> ElectrodeLayout:
        return self.recording.layout

    @property
    def gesture_names(self) -> Sequence[str]:
        return self.recording.gesture_names

    @property
    def finished(self) -> bool:
        return not self.loop and self._pos >= self.recording.n_samples

    def read(self, n_samples: int) -> SourceChunk:
        rec = self.recording
        parts, labels = [], []
        remaining = n_samples
        while remaining > 0:
            if self._pos >= rec.n_samples:
                if not self.loop:
                    break
                self._pos = 0
            take = min(remaining, rec.n_samples - self._pos)
            parts.append(rec.samples[self._pos : self._pos + take])
            labels.append(rec.labels[self._pos : self._pos + take])
            self._pos += take
            remaining -= take
        if not parts:
            return SourceChunk(np.zeros((0, rec.n_channels), np.float32), np.zeros(0, np.int16), rec.condition)
        return SourceChunk(np.concatenate(parts).astype(np.float32, copy=False), np.concatenate(labels),
                           rec.condition)


class SimulatorSource:
    """Adapter from the embedded `LiveSimulator` to `ChunkSource`."""

    def __init__(self, simulator: Any) -> None:
        self.simulator = simulator

    @classmethod
    def create(cls, *, subject: int = 0, session: int = 0, seed: int = 0,
               schedule: Sequence[str] = ("clean", "CA", "LC"), condition_s: float = 30.0,
               move_s: float = 5.0) -> SimulatorSource:
        from rohde.simulation.simulator import LiveSimulator  # the simulator is only needed by this source

        return cls(LiveSimulator(subject=subject, session=session, seed=seed, schedule=tuple(schedule),
                                 condition_s=condition_s, move_s=move_s))

    @property
    def fs_hz(self) -> float:
        return float(self.simulator.fs_hz)

    @property
    def n_channels(self) -> int:
        return int(self.simulator.n_channels)

    @property
    def layout(self) -> ElectrodeLayout:
        layout: ElectrodeLayout = self.simulator.layout
        return layout

    @property
    def gesture_names(self) -> Sequence[str]:
        return tuple(self.simulator.gesture_names)

    def read(self, n_samples: int) -> SourceChunk:
        chunk = self.simulator.read(n_samples)
        return SourceChunk(np.asarray(chunk.samples, np.float32), np.asarray(chunk.labels, np.int16),
                           str(chunk.condition))


class LslAmplifier:
    """Plays a `ChunkSource` as an LSL EMG outlet plus a truth marker outlet; `run` until stopped."""

    def __init__(self, source: ChunkSource, *, name: str = "RoHDE-Sim", source_id: str = "rohde-sim",
                 stream_type: str = "EMG", chunk_ms: float = 20.0, markers: bool = True,
                 marker_repeat_s: float = 1.0, lsl_config: Path | None = None, extra_channels: int = 0,
                 channel_format: str = "float32", shuffle_seed: int | None = None) -> None:
        if chunk_ms <= 0:
            raise ConfigError(f"chunk_ms must be positive, got {chunk_ms}.")
        if extra_channels < 0:
            raise ConfigError(f"extra_channels must be 0 or more, got {extra_channels}.")
        if channel_format not in SAMPLE_FORMATS:
            raise ConfigError(f"channel_format {channel_format!r} is not one of {', '.join(SAMPLE_FORMATS)}.")
        self.source = source
        self.name = name
        self.source_id = source_id
        self.extra_channels = extra_channels
        self.format = SAMPLE_FORMATS[channel_format]
        # Stream channel j carries source channel order[j].
        n = source.n_channels
        self.order = np.arange(n) if shuffle_seed is None else np.random.default_rng(shuffle_seed).permutation(n)
        self._in_order = bool(np.array_equal(self.order, np.arange(n)))
        self.chunk_samples = max(1, int(round(chunk_ms * source.fs_hz / 1000.0)))
        self._pylsl = import_pylsl(lsl_config)
        self.outlet = self._pylsl.StreamOutlet(self._emg_info(stream_type), self.chunk_samples)
        self.marker_outlet = None
        if markers:
            info = self._pylsl.StreamInfo(f"{name}-truth", "Markers", 3, self._pylsl.IRREGULAR_RATE,
                                          self._pylsl.cf_string, f"{source_id}-truth")
            info.desc().append_child_value("content", "truth: [gesture, condition, stream sample index]")
            self.marker_outlet = self._pylsl.StreamOutlet(info)
        # A plain flag, not a threading.Event: `stop()` runs inside SIGTERM handlers, and Event.set() there
        # deadlocks when the signal lands while the main thread holds the Event's lock inside Event.wait()
        # (the push loop sleeping): the process then stops pushing but never exits. Setting an attribute
        # takes no lock, and the loop below sleeps in short time.sleep() calls that see it.
        self._stopping = False
        self.samples_sent = 0
        self.t0: float | None = None  # LSL time of sample 0, set by `run`
        self._last_marker: tuple[str, str] | None = None
        self._repeat_samples = max(1, int(marker_repeat_s * source.fs_hz))
        self._last_marker_sample = 0

    def stream_layout(self) -> ElectrodeLayout:
        """The source's layout over the stream's channels: shuffled as they are, extra channels on no grid."""
        layout = self.source.layout
        position = np.empty(len(self.order), dtype=np.int64)
        position[self.order] = np.arange(len(self.order))  # source channel c is stream channel position[c]
        grids = tuple(ElectrodeGrid(name=g.name, ied_mm=g.ied_mm,
                                    channels=tuple(tuple(int(position[c]) if c != NO_ELECTRODE else NO_ELECTRODE
                                                         for c in row) for row in g.channels))
                      for g in layout.grids)
        return ElectrodeLayout(name=layout.name, grids=grids, n_channels=layout.n_channels + self.extra_channels)

    def _emg_info(self, stream_type: str) -> Any:
        src = self.source
        layout = self.stream_layout()
        info = self._pylsl.StreamInfo(self.name, stream_type, layout.n_channels, src.fs_hz, self.format.lsl_format,
                                      self.source_id)
        desc = info.desc()
        channels = desc.append_child("channels")
        extras = [*EXTRA_CHANNELS, *((f"AUX{k + 1}", "AUX", "V") for k in range(self.extra_channels))]
        described = [(label, "EMG", self.format.unit) for label in layout.channel_labels()[: src.n_channels]]
        for label, kind, unit in described + extras[: self.extra_channels]:
            ch = channels.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("unit", unit)
            ch.append_child_value("type", kind)
        desc.append_child_value("layout", layout.to_json())
        desc.append_child_value("gestures", json.dumps(list(src.gesture_names)))
        desc.append_child("acquisition").append_child_value("manufacturer", "RoHDE")
        return info

    def encode(self, samples_uv: np.ndarray, labels: np.ndarray, first_index: int) -> np.ndarray:
        """One chunk as the stream sends it: `(n, n_channels)` source uV -> stream order, extra channels
        appended, in the channel format's dtype and unit."""
        fmt = self.format
        if fmt.dtype is np.float32 and not self.extra_channels and self._in_order:
            return np.ascontiguousarray(samples_uv, dtype=np.float32)  # the common case, as the source gives it
        values = samples_uv[:, self.order].astype(np.float64) * fmt.per_uv
        if self.extra_channels:
            extra = np.zeros((len(labels), self.extra_channels))
            extra[:, 0] = (first_index + np.arange(len(labels))) % (1 << 15)  # a counter that fits int16
            if self.extra_channels > 1:
                extra[:, 1] = labels
            values = np.concatenate([values, extra], axis=1)
        if np.issubdtype(fmt.dtype, np.integer):
            limits = np.iinfo(fmt.dtype)
            values = np.clip(np.rint(values), limits.min, limits.max)
        return np.ascontiguousarray(values, dtype=fmt.dtype)

    def sample_at(self, lsl_time: float) -> int | None:
        """The stream sample stamped `lsl_time` (None before `run` starts): lets a cue act at its own time
        even when the push loop runs late."""
        return None if self.t0 is None else max(0, int(round((lsl_time - self.t0) * self.source.fs_hz)))

    def stop(self) -> None:
        """Ask `run` to return; safe from a signal handler and from another thread."""
        self._stopping = True

    def close(self) -> None:
        """Stop and destroy both outlets now, so inlets see the stream end at once; idempotent."""
        self._stopping = True
        # Dropping the last reference destroys the liblsl outlet (pylsl's __del__), which unadvertises it.
        self.outlet = None
        self.marker_outlet = None

    def run(self, *, duration_s: float | None = None) -> int:
        """Push in real time until `stop()`, `duration_s`, or the end of a non-looping source."""
        local_clock = self._pylsl.local_clock
        fs = self.source.fs_hz
        t0 = self.t0 = local_clock()
        limit = None if duration_s is None else int(duration_s * fs)
        while not self._stopping:
            due = int((local_clock() - t0) * fs)
            if limit is not None:
                due = min(due, limit)
            n = due - self.samples_sent
            if n >= self.chunk_samples or (limit is not None and due == limit and n > 0):
                chunk = self.source.read(n)
                got = len(chunk.labels)
                if got == 0:
                    break
                first_stamp = t0 + self.samples_sent / fs
                self._push_markers(chunk, first_stamp, fs)
                self.outlet.push_chunk(self.encode(chunk.samples, chunk.labels, self.samples_sent),
                                       first_stamp + (got - 1) / fs)
                self.samples_sent += got
            elif limit is not None and self.samples_sent >= limit:
                break
            else:
                time.sleep(self.chunk_samples / fs / 2)  # at most half a chunk: a stop is seen within it
        return self.samples_sent

    def _push_markers(self, chunk: SourceChunk, first_stamp: float, fs: float) -> None:
        if self.marker_outlet is None:
            return
        names = self.source.gesture_names
        labels = chunk.labels
        # Index 0 too: a change can fall exactly on a chunk boundary (the check below skips repeats).
        changes = {0} | {int(i) for i in np.nonzero(np.diff(labels))[0] + 1}
        for i in sorted(changes):
            label = int(labels[i])
            marker = (names[label] if 0 <= label < len(names) else UNUSABLE_MARKER, chunk.condition)
            if marker != self._last_marker:
                self.marker_outlet.push_sample([*marker, str(self.samples_sent + i)], first_stamp + i / fs)
                self._last_marker = marker
                self._last_marker_sample = self.samples_sent + i
        if self._last_marker is not None and self.samples_sent - self._last_marker_sample >= self._repeat_samples:
            self.marker_outlet.push_sample([*self._last_marker, str(self.samples_sent)], first_stamp)
            self._last_marker_sample = self.samples_sent
