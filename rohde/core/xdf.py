"""A minimal XDF writer and a structural checker (reading itself is left to `pyxdf`).

XDF (https://github.com/sccn/xdf/wiki/Specifications) is what LabRecorder saves from LSL streams.
`write_xdf` writes the subset RoHDE needs for tests and recording tools:

    "XDF:"                                  magic
    chunk = [NumLengthBytes][Length][Tag][Content]
      NumLengthBytes: 1, 4 or 8; Length (that many bytes, little-endian) counts Tag + Content
      Tag 1 FileHeader   : XML `<info><version>1.0</version></info>`
      Tag 2 StreamHeader : uint32 StreamId + XML `<info>` (name, type, channel_count, ...)
      Tag 3 Samples      : uint32 StreamId + varlen NumSamples + per sample
                           [TimeStampBytes 0|8][float64 stamp][values]; numeric values are
                           little-endian, each string value is varlen length + UTF-8 bytes
      Tag 6 StreamFooter : uint32 StreamId + XML `<info>` (first/last timestamp, sample_count)

The desc of an EMG stream written by RoHDE (and by its simulated LSL amplifier) holds:

    <desc>
      <channels><channel><label>G1R1C1</label><unit>microvolts</unit><type>EMG</type></channel>...</channels>
      <layout>{ElectrodeLayout.to_json()}</layout>   the explicit channel -> (grid, row, col) map
      <gestures>["no_movement", ...]</gestures>      optional: JSON list, index = class label
      <condition>clean</condition>                    optional: recording condition
    </desc>

`emg_desc` builds that element, `write_recording_xdf` writes a whole Recording (EMG + cues), and
`rohde.core.datasets.load_xdf_recording` reads them back. It reads other amplifiers' recordings too:
the EMG stream by name, types (EMG, ExG, EEG) or source_id, its channels by the `label`, `type` and
`unit` of each `<channel>` (counter and trigger channels dropped, values scaled to uV; see
`rohde.core.channel_map`).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np

from rohde.core.errors import RecordingFormatError
from rohde.core.layouts import ElectrodeLayout
from rohde.core.recording import Recording

MAGIC = b"XDF:"
TAG_FILE_HEADER = 1
TAG_STREAM_HEADER = 2
TAG_SAMPLES = 3
TAG_CLOCK_OFFSET = 4
TAG_BOUNDARY = 5
TAG_STREAM_FOOTER = 6
KNOWN_TAGS = frozenset(range(1, 7))

_NUMERIC_FORMATS: dict[str, str] = {
    "float32": "<f4",
    "double64": "<f8",
    "int8": "<i1",
    "int16": "<i2",
    "int32": "<i4",
    "int64": "<i8",
}
CHANNEL_FORMATS = (*_NUMERIC_FORMATS, "string")

# Samples per Samples chunk: keeps chunks small, as LabRecorder writes them.
_SAMPLES_PER_CHUNK = 512


@dataclass
class XdfStream:
    """One stream to write: numeric `(n_samples, n_channels)` or a list of string samples."""

    name: str
    type: str
    nominal_srate: float  # Hz; 0 for irregular streams such as markers
    channel_format: str  # one of CHANNEL_FORMATS
    time_stamps: np.ndarray  # (n_samples,) float64 LSL seconds
    time_series: np.ndarray | Sequence[Sequence[str]]  # (n_samples, n_channels) or [[str, ...], ...]
    source_id: str = ""
    desc: ET.Element | None = None  # the `<desc>` element, or None for an empty one
    extra: dict[str, str] = field(default_factory=dict)  # further `<info>` children

    @property
    def channel_count(self) -> int:
        if self.channel_format == "string":
            series = list(self.time_series)
            return len(series[0]) if series else 1
        return int(np.asarray(self.time_series).shape[1])


def emg_desc(
    layout: ElectrodeLayout,
    *,
    gesture_names: Sequence[str] | None = None,
    condition: str | None = None,
    unit: str = "microvolts",
) -> ET.Element:
    """The `<desc>` of an EMG stream: channel labels, the layout JSON, optional gestures/condition."""
    desc = ET.Element("desc")
    channels = ET.SubElement(desc, "channels")
    for label in layout.channel_labels():
        channel = ET.SubElement(channels, "channel")
        ET.SubElement(channel, "label").text = label
        ET.SubElement(channel, "unit").text = unit
        ET.SubElement(channel, "type").text = "EMG"
    ET.SubElement(desc, "layout").text = layout.to_json()
    if gesture_names is not None:
        ET.SubElement(desc, "gestures").text = json.dumps(list(gesture_names))
    if condition is not None:
        ET.SubElement(desc, "condition").text = condition
    return desc


def _varlen(value: int) -> bytes:
    """XDF variable-length unsigned integer: a width byte (1, 4 or 8) then the value."""
    if value < 0:
        raise RecordingFormatError(f"XDF lengths are unsigned, got {value}.")
    if value < 1 << 8:
        return b"\x01" + struct.pack("<B", value)
    if value < 1 << 32:
        return b"\x04" + struct.pack("<I", value)
    return b"\x08" + struct.pack("<Q", value)


def _chunk(tag: int, content: bytes) -> bytes:
    return _varlen(len(content) + 2) + struct.pack("<H", tag) + content


def _xml_bytes(element: ET.Element) -> bytes:
    return b'<?xml version="1.0"?>' + ET.tostring(element, encoding="utf-8", xml_declaration=False)


def _header_xml(stream: XdfStream) -> bytes:
    info = ET.Element("info")
    values = {
        "name": stream.name,
        "type": stream.type,
        "channel_count": str(stream.channel_count),
        "nominal_srate": repr(float(stream.nominal_srate)),
        "channel_format": stream.channel_format,
        "source_id": stream.source_id,
        "version": "1.1",
        "created_at": repr(float(stream.time_stamps[0])) if len(stream.time_stamps) else "0",
        **stream.extra,
    }
    for key, value in values.items():
        ET.SubElement(info, key).text = value
    info.append(stream.desc if stream.desc is not None else ET.Element("desc"))
    return _xml_bytes(info)


def _footer_xml(stream: XdfStream) -> bytes:
    info = ET.Element("info")
    stamps = np.asarray(stream.time_stamps, dtype=np.float64)
    ET.SubElement(info, "first_timestamp").text = repr(float(stamps[0])) if len(stamps) else "0"
    ET.SubElement(info, "last_timestamp").text = repr(float(stamps[-1])) if len(stamps) else "0"
    ET.SubElement(info, "sample_count").text = str(len(stamps))
    ET.SubElement(info, "clock_offsets")
    return _xml_bytes(info)


def _sample_chunks(stream_id: int, stream: XdfStream) -> list[bytes]:
    stamps = np.asarray(stream.time_stamps, dtype=np.float64)
    chunks = []
    if stream.channel_format == "string":
        series = [list(sample) for sample in stream.time_series]
        for start in range(0, len(stamps), _SAMPLES_PER_CHUNK):
            stop = min(start + _SAMPLES_PER_CHUNK, len(stamps))
            parts = [struct.pack("<I", stream_id), _varlen(stop - start)]
            for k in range(start, stop):
                parts.append(b"\x08" + struct.pack("<d", stamps[k]))
                for value in series[k]:
                    encoded = str(value).encode("utf-8")
                    parts.append(_varlen(len(encoded)) + encoded)
            chunks.append(_chunk(TAG_SAMPLES, b"".join(parts)))
        return chunks
    values = np.ascontiguousarray(np.asarray(stream.time_series), dtype=_NUMERIC_FORMATS[stream.channel_format])
    n_samples, n_channels = values.shape
    # Each sample is one record: stamp-width byte, float64 stamp, then the channel values.
    record = np.dtype([("width", "u1"), ("stamp", "<f8"), ("values", values.dtype, (n_channels,))])
    for start in range(0, n_samples, _SAMPLES_PER_CHUNK):
        stop = min(start + _SAMPLES_PER_CHUNK, n_samples)
        block = np.zeros(stop - start, dtype=record)
        block["width"] = 8
        block["stamp"] = stamps[start:stop]
        block["values"] = values[start:stop]
        body = struct.pack("<I", stream_id) + _varlen(stop - start) + block.tobytes()
        chunks.append(_chunk(TAG_SAMPLES, body))
    return chunks


def _validate(stream: XdfStream) -> None:
    if stream.channel_format not in CHANNEL_FORMATS:
        raise RecordingFormatError(
            f"Stream {stream.name!r} has channel_format {stream.channel_format!r}; use one of {CHANNEL_FORMATS}."
        )
    n_stamps = len(stream.time_stamps)
    if stream.channel_format == "string":
        n_values = len(list(stream.time_series))
    else:
        array = np.asarray(stream.time_series)
        if array.ndim != 2:
            raise RecordingFormatError(
                f"Stream {stream.name!r} needs time_series of shape (n_samples, n_channels), got {array.shape}."
            )
        n_values = array.shape[0]
    if n_values != n_stamps:
        raise RecordingFormatError(
            f"Stream {stream.name!r} has {n_values} samples but {n_stamps} time stamps; give one stamp per sample."
        )


def write_xdf(path: str | Path, streams: Sequence[XdfStream]) -> Path:
    """Write `streams` to an XDF 1.0 file at `path` (headers, samples, footers); returns the path."""
    if not streams:
        raise RecordingFormatError("write_xdf needs at least one stream.")
    for stream in streams:
        _validate(stream)
    info = ET.Element("info")
    ET.SubElement(info, "version").text = "1.0"
    parts = [MAGIC, _chunk(TAG_FILE_HEADER, _xml_bytes(info))]
    for stream_id, stream in enumerate(streams, start=1):
        parts.append(_chunk(TAG_STREAM_HEADER, struct.pack("<I", stream_id) + _header_xml(stream)))
    for stream_id, stream in enumerate(streams, start=1):
        parts.extend(_sample_chunks(stream_id, stream))
    for stream_id, stream in enumerate(streams, start=1):
        parts.append(_chunk(TAG_STREAM_FOOTER, struct.pack("<I", stream_id) + _footer_xml(stream)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(parts))
    return path


def check_xdf(path: str | Path) -> list[tuple[int, int]]:
    """Walk the chunk structure of an XDF file; returns (tag, length) per chunk.

    `pyxdf` skips over damaged chunks with a log message and returns what it could read; RoHDE
    refuses such a file instead, so a truncated recording is never taken for a short one.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RecordingFormatError(f"Cannot read XDF file {str(path)!r} ({exc}).") from exc
    if not data.startswith(MAGIC):
        raise RecordingFormatError(f"{str(path)!r} is not an XDF file: it does not start with 'XDF:'.")
    chunks: list[tuple[int, int]] = []
    pos = len(MAGIC)
    while pos < len(data):
        width = data[pos]
        if width not in (1, 4, 8) or pos + 1 + width > len(data):
            raise RecordingFormatError(f"XDF file {str(path)!r} has a malformed chunk length at byte {pos}.")
        length = int.from_bytes(data[pos + 1 : pos + 1 + width], "little")
        start = pos + 1 + width
        if length < 2 or start + length > len(data):
            raise RecordingFormatError(
                f"XDF file {str(path)!r} is truncated or corrupt: the chunk at byte {pos} claims {length} bytes "
                f"but {len(data) - start} remain."
            )
        tag = int.from_bytes(data[start : start + 2], "little")
        if tag not in KNOWN_TAGS:
            raise RecordingFormatError(f"XDF file {str(path)!r} has an unknown chunk tag {tag} at byte {pos}.")
        chunks.append((tag, length))
        pos = start + length
    if not chunks or chunks[0][0] != TAG_FILE_HEADER:
        raise RecordingFormatError(f"XDF file {str(path)!r} does not begin with a FileHeader chunk.")
    return chunks


UNUSABLE_CUE = "unusable"  # marker written where labels are -1; names no gesture, so it reads back as -1


def recording_streams(recording: Recording, *, start_s: float = 0.0, name: str = "RoHDE EMG") -> list[XdfStream]:
    """An EMG stream (desc with layout, gestures, condition) and a cue stream for a Recording.

    One cue per change of label, stamped at the first sample of the new label; -1 stretches get
    the `unusable` cue. `rohde.core.datasets.load_xdf_recording` reads the pair back to the same
    samples and labels.
    """
    n = recording.n_samples
    stamps = start_s + np.arange(n, dtype=np.float64) / recording.fs_hz
    emg = XdfStream(
        name=name,
        type="EMG",
        nominal_srate=recording.fs_hz,
        channel_format="float32",
        time_stamps=stamps,
        time_series=recording.samples,
        source_id=f"rohde-{recording.subject}-{recording.session}-{recording.trial}",
        desc=emg_desc(recording.layout, gesture_names=recording.gesture_names, condition=recording.condition),
    )
    labels = recording.labels.astype(np.int64)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(labels)) + 1]) if n else np.zeros(0, dtype=np.int64)
    cues = [[recording.gesture_names[labels[i]] if labels[i] >= 0 else UNUSABLE_CUE] for i in starts]
    markers = XdfStream(
        name=f"{name} cues",
        type="Markers",
        nominal_srate=0.0,
        channel_format="string",
        time_stamps=stamps[starts],
        time_series=cues,
        source_id=f"rohde-cues-{recording.subject}-{recording.session}-{recording.trial}",
    )
    return [emg, markers]


def write_recording_xdf(recording: Recording, path: str | Path, *, start_s: float = 0.0) -> Path:
    """Write a Recording as an XDF file of an EMG stream plus its gesture cues."""
    if UNUSABLE_CUE in recording.gesture_names:
        raise RecordingFormatError(f"A gesture may not be named {UNUSABLE_CUE!r}: it marks unusable stretches.")
    return write_xdf(path, recording_streams(recording, start_s=start_s))
