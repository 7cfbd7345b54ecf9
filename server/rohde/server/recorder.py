"""`rohde record`: a guided calibration session from a live EMG stream to a labelled `.rohde.npz`.

The recorder resolves the EMG stream (name, type, source_id, as `rohde serve`), publishes the
protocol's cues on an LSL marker stream (`rohde.server.cue_protocol`: the server forwards them to
WebSocket clients, `rohde simulate --follow-cues` performs them, LabRecorder can store them beside the
EMG) and prints them in the terminal.

Nothing captured is lost to an interruption: every pulled chunk is appended to a journal folder
(`OUT.partial/`: raw samples, time stamps and cues, each a plain append-only file) and the journal
becomes the recording at the end, on Ctrl-C, on SIGTERM and when the stream is lost.
`finalize_journal` turns a journal left by a killed recorder into its recording too
(`rohde record --recover OUT.partial`).

Labels come from the cues exactly as the XDF loader derives them (`rohde.core.datasets.cue_labels`:
each sample takes the latest cue at or before its LSL time stamp), so a LabRecorder file of the same
EMG and cue streams reads back with the same labels.
"""

from __future__ import annotations

import importlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from rohde.core.channel_map import ChannelInfo, ChannelMapping, map_channels, select_channels
from rohde.core.datasets import cue_labels
from rohde.core.errors import (
    ConfigError,
    LayoutError,
    RecordingFormatError,
    RohdeError,
    StreamMismatchError,
    StreamNotFoundError,
)
from rohde.core.layouts import NO_ELECTRODE, ElectrodeLayout, default_layout, flexemg_layout, layout_from_spec
from rohde.core.recording import SUFFIX, Recording
from rohde.server.cue_protocol import (
    CUE_CHANNELS,
    CUE_STREAM_NAME,
    CUE_STREAM_TYPE,
    DISTURBED_CONDITION,
    CalibrationProtocol,
    Cue,
    protocol_cues,
)
from rohde.server.lsl_inlet import CHANNEL_FORMATS, NUMPY_DTYPES, StreamDescription, StreamQuery, import_pylsl, resolve

logger = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".partial"
PULL_WAIT_S = 0.05  # longest wait for EMG per loop turn: cues go out within this of their time
TAIL_S = 0.5  # EMG recorded past the last cue
MAX_LAG_S = 30.0  # longest wait for samples up to the last cue from an amplifier that runs behind
CONSUMER_WAIT_S = 2.0  # longest wait for a listener of the cue stream before the first cue


@dataclass(frozen=True)
class RecordOptions:
    out: Path  # the .rohde.npz to write
    query: StreamQuery  # which EMG stream
    protocol: CalibrationProtocol
    layout: str | None = None  # layout preset when the stream's desc has none
    channels: str | None = None  # which stream channels are EMG (`--channels`, as the server's); None: found
    subject: str = "me"
    session: str | None = None  # None: the start time
    cue_stream_name: str = CUE_STREAM_NAME
    resolve_timeout_s: float = 10.0
    compress: bool = False  # EMG noise barely compresses; writing uncompressed takes a second, not half a minute


def output_path(out: Path) -> Path:
    return out if out.name.endswith(SUFFIX) else out.with_name(out.name + SUFFIX)


def journal_path(out: Path) -> Path:
    return output_path(out).with_name(output_path(out).name + JOURNAL_SUFFIX)


def grid_channels_only(layout: ElectrodeLayout) -> ElectrodeLayout:
    """`layout` without its channels on no grid (an amplifier's counter, trigger...), renumbered in stream order."""
    used = sorted(c for g in layout.grids for row in g.channels for c in row if c != NO_ELECTRODE)
    if len(used) == layout.n_channels:
        return layout
    rank = {c: i for i, c in enumerate(used)}
    grids = tuple(replace(g, channels=tuple(tuple(rank.get(c, NO_ELECTRODE) for c in row) for row in g.channels))
                  for g in layout.grids)
    return ElectrodeLayout(name=layout.name, grids=grids, n_channels=len(used))


def stream_channels(info: Any, layout: str | None, selection: str | None) -> tuple[ElectrodeLayout, ChannelMapping]:
    """The layout to record and which stream channels feed it, scaled to uV.

    The layout: `layout` (a preset name) when given, else the stream desc's layout JSON without its channels on
    no grid, else by the count of EMG channels (auxiliary ones dropped: 192 -> 3x8x8, 64 -> flexemg 16 x 4).
    The channels: as the server maps them (`rohde.core.channel_map`: labels, auxiliary channels, units).
    """
    stream = StreamDescription.from_info(info)
    channels = list(stream.channels) or [ChannelInfo() for _ in range(stream.n_channels)]
    described = ElectrodeLayout.from_json(stream.layout_json) if stream.layout_json else None
    positions = described.channel_labels() if described and described.n_channels == stream.n_channels else None
    if layout is not None:
        chosen = layout_from_spec(layout)
    elif described is not None:
        chosen = grid_channels_only(described)
    else:
        picked, _ = select_channels(channels, n_wanted=None, selection=selection)
        presets = {192: default_layout, 64: flexemg_layout}
        if len(picked) not in presets:
            raise LayoutError(f"The EMG stream has {len(picked)} EMG channels and no layout in its description; pass "
                              "--layout (a preset such as 3x8x8, flexemg16x4, or GRIDSxROWSxCOLS).")
        chosen = presets[len(picked)]()
    try:
        mapping = map_channels(channels, chosen.channel_labels(), selection=selection, positions=positions)
    except StreamMismatchError as exc:
        raise LayoutError(f"Stream {stream.name!r} does not fit layout {chosen.name!r}: {exc}.") from exc
    return chosen, mapping


class Journal:
    """Append-only files of one recording in progress; each append is flushed, so a killed process
    leaves every chunk it had pulled."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        if folder.exists():
            raise ConfigError(f"{str(folder)!r} exists: an earlier recording was not finished. Turn it into its "
                              f"recording with `rohde record --recover {folder}`, or remove it.")
        folder.mkdir(parents=True)
        self.folder = folder
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))
        self._samples = (folder / "samples.f32").open("ab")
        self._stamps = (folder / "stamps.f64").open("ab")
        self._cues = (folder / "cues.jsonl").open("a")
        self.n_samples = 0

    def append(self, samples: np.ndarray, stamps: np.ndarray) -> None:
        self._samples.write(np.ascontiguousarray(samples, dtype="<f4").tobytes())
        self._stamps.write(np.ascontiguousarray(stamps, dtype="<f8").tobytes())
        self._samples.flush()
        self._stamps.flush()
        self.n_samples += len(stamps)

    def cue(self, stamp: float, marker: list[str]) -> None:
        self._cues.write(json.dumps({"stamp": stamp, "marker": marker}) + "\n")
        self._cues.flush()

    def close(self) -> None:
        for handle in (self._samples, self._stamps, self._cues):
            handle.close()


def finalize_journal(folder: Path, out: Path | None = None, *, interrupted: bool | None = None,
                     compress: bool = False) -> Path:
    """The recording of a journal folder (labels from its cues); removes the folder once written."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        raise RecordingFormatError(f"{str(folder)!r} is not a recording journal ({exc}).") from exc
    layout = ElectrodeLayout.from_dict(meta["layout"])
    n_channels = layout.n_channels
    raw = np.fromfile(folder / "samples.f32", dtype="<f4")
    stamps = np.fromfile(folder / "stamps.f64", dtype="<f8")
    n = min(len(raw) // n_channels, len(stamps))  # a chunk cut by a kill counts up to its last whole sample
    samples = raw[: n * n_channels].reshape(n, n_channels)
    stamps = stamps[:n]
    cues = [json.loads(line) for line in (folder / "cues.jsonl").read_text().splitlines() if line.strip()]
    cue_stamps = np.array([c["stamp"] for c in cues], dtype=np.float64)
    fs_hz = float(meta["fs_hz"])
    names = tuple(meta["gesture_names"])
    labels = cue_labels(stamps, cue_stamps, [c["marker"][0] for c in cues], names, tolerance_s=0.5 / fs_hz)
    conditions = [c["marker"][1] if len(c["marker"]) > 1 else "clean" for c in cues]
    # Tapping disturbs every electrode as far as the recorder knows: the whole row is marked.
    disturbed_rows = cue_labels(stamps, cue_stamps, conditions, ["clean", DISTURBED_CONDITION],
                                tolerance_s=0.5 / fs_hz) == 1
    mask = np.repeat(disturbed_rows[:, None], n_channels, axis=1) if disturbed_rows.any() else None
    finished = any(json.loads(c["marker"][2]).get("phase") == "done" for c in cues if len(c["marker"]) > 2)
    interrupted = (not finished) if interrupted is None else interrupted
    recording = Recording(
        samples=samples,
        fs_hz=fs_hz,
        layout=layout,
        labels=labels,
        gesture_names=names,
        condition="mixed" if mask is not None else "clean",
        disturbance_mask=mask,
        subject=str(meta["subject"]),
        session=str(meta["session"]),
        trial=str(meta.get("trial", "calibration")),
        provenance={
            "source": "rohde record",
            "stream": meta["stream"],
            "protocol": meta["protocol"],
            "cues": [[c["stamp"], *c["marker"]] for c in cues],
            "first_timestamp": float(stamps[0]) if n else None,
            "interrupted": interrupted,
            "disturbed_seconds": float(disturbed_rows.sum() / fs_hz),
        },
    )
    path = recording.save(out if out is not None else Path(meta["out"]), compress=compress)
    shutil.rmtree(folder)
    return path


class CalibrationRecorder:
    """Runs one protocol against one EMG stream; `stop()` (safe in a signal handler) ends it early."""

    def __init__(self, options: RecordOptions, *, lsl_config: Path | None = None,
                 echo: Callable[[str], None] | None = None) -> None:
        self.options = options
        self._pylsl = import_pylsl(lsl_config)
        self._lsl_config = lsl_config
        self._echo = echo or _print
        # A plain flag: stop() runs in signal handlers, where taking a lock can deadlock (see LslAmplifier.stop).
        self._stopping = False
        self.interrupted = False
        self.lost: str | None = None

    def stop(self) -> None:
        self._stopping = True
        self.interrupted = True

    def _open_emg(self) -> Any:
        query = self.options.query
        deadline = time.monotonic() + self.options.resolve_timeout_s
        found: list[Any] = []
        while not found and not self._stopping and time.monotonic() < deadline:
            # Short looks: each waits its whole timeout, so the first stream found is taken within a second.
            found = [info for info in resolve(query, timeout_s=1.0, lsl_config=self._lsl_config)
                     if int(info.channel_format()) != self._pylsl.cf_string]
        if not found:
            raise StreamNotFoundError(f"No numeric LSL stream matches {query.describe()} within "
                                      f"{self.options.resolve_timeout_s:g} s; is the amplifier streaming? "
                                      "Select it with --stream-name, --stream-type or --stream-source-id.")
        if len(found) > 1:
            names = [f"{i.name()} ({i.source_id()})" for i in found]
            logger.warning("%d streams match %s: %s; recording the first. Narrow it with --stream-source-id.",
                           len(found), query.describe(), names)
        inlet = self._pylsl.StreamInlet(found[0], max_buflen=30, recover=False,
                                        processing_flags=self._pylsl.proc_clocksync | self._pylsl.proc_dejitter)
        inlet.open_stream(timeout=self.options.resolve_timeout_s)
        return inlet

    def _cue_outlet(self) -> Any:
        pylsl = self._pylsl
        info = pylsl.StreamInfo(self.options.cue_stream_name, CUE_STREAM_TYPE, CUE_CHANNELS, pylsl.IRREGULAR_RATE,
                                pylsl.cf_string, f"{self.options.cue_stream_name}-{time.time_ns() % 10**9}")
        info.desc().append_child_value("content", "RoHDE calibration cues: [label, condition, info JSON]")
        return pylsl.StreamOutlet(info)

    def run(self) -> Path:
        """Record the whole protocol (or until stopped or the stream is lost); returns the recording's path."""
        options = self.options
        out = output_path(options.out)
        # The cue stream first, so its listeners (the server, a simulator, LabRecorder) connect while the EMG
        # stream is resolved; then a short wait for one, so the first cues reach it.
        outlet = self._cue_outlet()
        inlet = self._open_emg()
        outlet.wait_for_consumers(CONSUMER_WAIT_S)
        info = inlet.info(timeout=options.resolve_timeout_s)
        fs_hz = float(info.nominal_srate())
        if fs_hz <= 0:
            raise ConfigError(f"Stream {info.name()!r} has no nominal rate; record a regularly sampled EMG stream.")
        layout, mapping = stream_channels(info, options.layout, options.channels)
        if mapping.dropped:
            logger.info("Recording %d EMG channels; leaving out %s.", layout.n_channels, ", ".join(mapping.dropped))
        cues = protocol_cues(options.protocol)
        meta = {
            "out": str(out), "fs_hz": fs_hz, "layout": layout.to_dict(),
            "gesture_names": list(options.protocol.gesture_names), "subject": options.subject,
            "session": options.session or time.strftime("%Y%m%d-%H%M%S"), "trial": "calibration",
            "stream": {"name": info.name(), "type": info.type(), "source_id": info.source_id(),
                       "n_channels": int(info.channel_count()), "fs_hz": fs_hz},
            "protocol": {**asdict(options.protocol), "duration_s": options.protocol.duration_s},
        }
        journal = Journal(journal_path(out), meta)
        self._echo(f"Recording {info.name()!r} ({int(info.channel_count())} channels, {fs_hz:g} Hz, layout "
                   f"{layout.name}) into {out}: {len(cues)} cues, {options.protocol.duration_s:.0f} s. Ctrl-C stops "
                   "and keeps what was recorded.")
        try:
            self._loop(inlet, outlet, journal, cues, fs_hz, int(info.channel_count()), mapping)
        finally:
            journal.close()
            inlet.close_stream()
            del outlet  # unadvertises the cue stream
        if journal.n_samples == 0:
            shutil.rmtree(journal.folder)
            raise RohdeError(f"Stopped before any sample of {info.name()!r} arrived; nothing was written.")
        path = finalize_journal(journal.folder, out, interrupted=self.interrupted or self.lost is not None,
                                compress=options.compress)
        self._echo(f"Wrote {path} ({journal.n_samples / fs_hz:.1f} s)"
                   + (" - interrupted, everything up to then kept" if self.interrupted else "")
                   + (f" - the stream was lost: {self.lost}" if self.lost else "") + ".")
        return path

    def _loop(self, inlet: Any, outlet: Any, journal: Journal, cues: list[Cue], fs_hz: float, n_channels: int,
              mapping: ChannelMapping) -> None:
        local_clock = self._pylsl.local_clock
        lost_error = importlib.import_module("pylsl.util").LostError
        dtype = NUMPY_DTYPES.get(CHANNEL_FORMATS.get(int(inlet.info().channel_format()), ""), np.float32)
        buffer = np.zeros((max(1, int(fs_hz)), n_channels), dtype=dtype)
        columns = np.asarray(mapping.stream_indices)
        scale = np.asarray(mapping.scale_to_uv, dtype=np.float64)
        # The first cue waits for the first samples: the protocol starts when the stream really flows.
        t0: float | None = None
        next_cue = 0
        end_at: float | None = None
        last_stamp = float("-inf")
        while not self._stopping:
            try:
                _, stamps = inlet.pull_chunk(timeout=PULL_WAIT_S, max_samples=len(buffer), dest_obj=buffer)
            except lost_error as exc:
                self.lost = str(exc)
                logger.error("The EMG stream was lost: %s; keeping what was recorded.", exc)
                return
            if stamps:
                last_stamp = float(stamps[-1])
                uv = buffer[: len(stamps), columns].astype(np.float64) * scale  # the EMG channels, in uV
                journal.append(uv.astype(np.float32), np.asarray(stamps, dtype=np.float64))
                if t0 is None:
                    t0 = local_clock()
            if t0 is None:
                continue
            now = local_clock()
            while next_cue < len(cues) and now >= t0 + cues[next_cue].start_s:
                cue = cues[next_cue]
                stamp = t0 + cue.start_s
                marker = cue.marker()
                outlet.push_sample(marker, stamp)
                journal.cue(stamp, marker)
                self._echo(cue.prompt())
                next_cue += 1
                if next_cue == len(cues):
                    end_at = stamp + TAIL_S
            # The end: once the samples up to the last cue are in (an amplifier may run behind), or given up on.
            if end_at is not None and (last_stamp >= end_at or now >= end_at + MAX_LAG_S):
                if last_stamp < end_at:
                    logger.warning("The EMG stream runs %.1f s behind; ending without its last samples.",
                                   end_at - last_stamp)
                return


def _print(text: str, stream: TextIO = sys.stdout) -> None:
    stream.write(text + "\n")
    stream.flush()
