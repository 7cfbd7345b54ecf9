"""Thin LSL layer: resolve streams, describe them, map their channels onto a model, pull chunks.

Amplifier apps publish EMG under their own conventions (type `EMG`, `ExG` or `EEG`; counter and trigger
channels appended; float32, double or integer values in V, mV, uV or nV): a `StreamQuery` accepts a list
of types, and `map_stream_channels` reads the channels of the stream's desc and builds the
`rohde.core.channel_map.ChannelMapping` with which `InletReader.pull` returns the model's channels, in the
model's order, as float32 uV.

pylsl is imported through `import_pylsl`, which first makes sure `LSLAPICFG` points at a config
file (liblsl reads it once per process, at its first call), so no module here touches the network
with the default multicast set-up by accident.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from rohde.core.channel_map import EMG_STREAM_TYPES, ChannelInfo, ChannelMapping, map_channels, parse_selection
from rohde.core.errors import LayoutError, StreamMismatchError
from rohde.core.layouts import ElectrodeLayout
from rohde.core.model_package import ModelMetadata

logger = logging.getLogger(__name__)

# liblsl channel-format codes (lsl_channel_format_t) -> names.
CHANNEL_FORMATS = {1: "float32", 2: "double64", 3: "string", 4: "int32", 5: "int16", 6: "int8", 7: "int64"}
# Numeric formats and the numpy dtype liblsl writes them into (pulled as is, converted to float32 uV after).
NUMPY_DTYPES = {"float32": np.float32, "double64": np.float64, "int32": np.int32, "int16": np.int16,
                "int8": np.int8, "int64": np.int64}
DEFAULT_STREAM_TYPES = EMG_STREAM_TYPES  # EMG, ExG, EEG: matched without regard to case
_UPPER = "translate({field},'abcdefghijklmnopqrstuvwxyz','ABCDEFGHIJKLMNOPQRSTUVWXYZ')"


def import_pylsl(default_config: Path | None = None) -> ModuleType:
    """pylsl, with `LSLAPICFG` set to `default_config` first when the environment has none."""
    if default_config is not None and "LSLAPICFG" not in os.environ:
        os.environ["LSLAPICFG"] = str(default_config)
    return importlib.import_module("pylsl")


@dataclass(frozen=True)
class StreamQuery:
    """Which streams to serve (every given property must match; `type` is one type or a list of accepted
    ones, compared without case; `source_id` one source_id or several separated by commas, any of which
    matches) and, optionally, which of their channels (`channels`, see
    `rohde.core.channel_map.parse_selection`)."""

    name: str | None = None
    type: str | tuple[str, ...] | None = None
    source_id: str | None = None
    channels: str | None = None

    def __post_init__(self) -> None:
        types = (self.type,) if isinstance(self.type, str) else tuple(self.type or ())
        types = tuple(t.strip() for t in types if t and t.strip())
        object.__setattr__(self, "type", types or None)
        if self.channels is not None:
            parse_selection(self.channels)  # a malformed selection fails at start-up, not in a stream's worker

    @property
    def types(self) -> tuple[str, ...]:
        return self.type if isinstance(self.type, tuple) else ()

    @property
    def source_ids(self) -> tuple[str, ...]:
        """The accepted source_ids (empty: any); several let one server own a set of streams."""
        return tuple(v.strip() for v in (self.source_id or "").split(",") if v.strip())

    def predicate(self) -> str:
        parts = [f"name={xpath_literal(self.name)}"] if self.name else []
        ids = self.source_ids
        if ids:
            any_id = " or ".join(f"source_id={xpath_literal(v)}" for v in ids)
            parts.append(f"({any_id})" if len(ids) > 1 else any_id)
        if self.types:
            any_type = " or ".join(f"{_UPPER.format(field='type')}={xpath_literal(t.upper())}" for t in self.types)
            parts.insert(1 if self.name else 0, f"({any_type})" if len(self.types) > 1 else any_type)
        return " and ".join(parts) if parts else "count(channel_format)>=0"

    def describe(self) -> str:
        """Readable: `name='amp' and type in EMG, ExG, EEG; channels 0-63`."""
        parts = [f"name={self.name!r}"] if self.name else []
        ids = self.source_ids
        if ids:
            parts.append(f"source_id={ids[0]!r}" if len(ids) == 1 else f"source_id in {', '.join(map(repr, ids))}")
        if self.types:
            parts.insert(1 if self.name else 0, f"type in {', '.join(self.types)}")
        text = " and ".join(parts) if parts else "any stream"
        return text + (f"; channels {self.channels}" if self.channels else "")


def xpath_literal(value: str) -> str:
    """`value` as an XPath 1.0 string literal, which has no escapes: quoted with whichever quote it lacks,
    else pieced together with concat() (a name like `Bob's amp` must not break or widen the query)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    pieces = value.split("'")
    return "concat(" + ", \"'\", ".join(f"'{piece}'" for piece in pieces) + ")"


@dataclass(frozen=True)
class StreamDescription:
    """What the server knows about one LSL stream, from its StreamInfo (a resolver's result carries no
    desc, so no channels; the inlet's full info does)."""

    name: str
    type: str
    source_id: str
    uid: str
    hostname: str
    n_channels: int
    fs_hz: float
    channel_format: str
    channels: tuple[ChannelInfo, ...] = field(default=())  # from desc/channels, when it describes every channel
    layout_json: str | None = None  # desc/layout: RoHDE's explicit channel -> electrode map, when present

    @property
    def channel_labels(self) -> tuple[str, ...]:
        return tuple(c.label for c in self.channels) if any(c.label for c in self.channels) else ()

    @classmethod
    def from_info(cls, info: Any) -> StreamDescription:
        layout = info.desc().child_value("layout")
        return cls(
            name=info.name(),
            type=info.type(),
            source_id=info.source_id(),
            uid=info.uid(),
            hostname=info.hostname(),
            n_channels=int(info.channel_count()),
            fs_hz=float(info.nominal_srate()),
            channel_format=CHANNEL_FORMATS.get(int(info.channel_format()), str(info.channel_format())),
            channels=tuple(_channels(info)),
            layout_json=layout or None,
        )


def _channels(info: Any) -> list[ChannelInfo]:
    """`desc/channels/channel` (label, type, unit) when the stream describes every channel."""
    found: list[ChannelInfo] = []
    channel = info.desc().child("channels").child("channel")
    while not channel.empty() and len(found) < info.channel_count():
        found.append(ChannelInfo(channel.child_value("label").strip(), channel.child_value("type").strip(),
                                 channel.child_value("unit").strip()))
        channel = channel.next_sibling("channel")
    return found if len(found) == info.channel_count() else []


def _refusal(stream: StreamDescription, meta: ModelMetadata, problems: list[str]) -> StreamMismatchError:
    return StreamMismatchError(
        f"Stream {stream.name!r} ({stream.source_id or stream.uid}) is refused for model {meta.name!r}: "
        + "; ".join(problems) + "."
    )


def check_stream_basics(stream: StreamDescription, meta: ModelMetadata) -> None:
    """What a resolver's result already tells: a numeric format and the model's rate. A stream with fewer
    channels than the model can never fit either; everything else about channels needs the desc."""
    problems = []
    if stream.n_channels < meta.n_channels:
        problems.append(f"it has {stream.n_channels} channels, the model needs {meta.n_channels}")
    if abs(stream.fs_hz - meta.fs_hz) > 1e-6 * meta.fs_hz:
        problems.append(f"its nominal rate is {stream.fs_hz:g} Hz, the model needs {meta.fs_hz:g} Hz")
    if stream.channel_format not in NUMPY_DTYPES:
        problems.append(f"its channel format is {stream.channel_format}, the server reads numeric formats "
                        f"({', '.join(NUMPY_DTYPES)})")
    if problems:
        raise _refusal(stream, meta, problems)


def _positions(stream: StreamDescription) -> list[str] | None:
    """Each channel's electrode name from the layout in the desc, when that layout covers the stream."""
    if not stream.layout_json:
        return None
    try:
        layout = ElectrodeLayout.from_json(stream.layout_json)
    except (LayoutError, ValueError):
        logger.warning("Stream %r has a layout in its desc that does not parse; ignoring it.", stream.name)
        return None
    return layout.channel_labels() if layout.n_channels == stream.n_channels else None


def map_stream_channels(stream: StreamDescription, meta: ModelMetadata, selection: str | None = None) -> ChannelMapping:
    """The model's channels in `stream` (needs the full description: `InletReader.describe`); raises
    StreamMismatchError naming why they cannot be found."""
    check_stream_basics(stream, meta)
    channels = stream.channels or tuple(ChannelInfo() for _ in range(stream.n_channels))
    labels = ElectrodeLayout.from_dict(meta.layout).channel_labels()
    try:
        return map_channels(channels, labels, selection=selection, positions=_positions(stream))
    except StreamMismatchError as exc:
        raise _refusal(stream, meta, [str(exc)]) from exc


def check_stream_fits_model(stream: StreamDescription, meta: ModelMetadata, *,
                            selection: str | None = None) -> ChannelMapping:
    """Raise StreamMismatchError naming every difference between the stream and the model; else the mapping."""
    return map_stream_channels(stream, meta, selection)


def resolve(query: StreamQuery, *, timeout_s: float, lsl_config: Path | None = None) -> list[Any]:
    """Every stream visible now that matches `query`, waiting `timeout_s` (on loopback the first
    answers take about 0.5 s, so give at least 1 s)."""
    pylsl = import_pylsl(lsl_config)
    return list(pylsl.resolve_bypred(query.predicate(), 0, timeout_s))


class StreamResolver:
    """A background resolver (liblsl's continuous resolver) for `query`; `results()` never waits.

    A vanished stream stays listed for up to `forget_after_s`; callers recognise it by its uid.
    """

    def __init__(self, query: StreamQuery, *, forget_after_s: float = 2.0, lsl_config: Path | None = None) -> None:
        pylsl = import_pylsl(lsl_config)
        self.query = query
        self._resolver = pylsl.ContinuousResolver(pred=query.predicate(), forget_after=forget_after_s)

    def results(self) -> list[Any]:
        return list(self._resolver.results())

    def close(self) -> None:
        # Dropping the last reference destroys the liblsl resolver and its threads.
        self._resolver = None


class InletReader:
    """One inlet with preallocated pull buffers; `pull` waits in liblsl at most `wait_s` and returns the
    model's channels as float32 uV once `use_mapping` was given the stream's `ChannelMapping`."""

    def __init__(self, info: Any, *, buffer_s: int, max_chunk: int, lsl_config: Path | None = None) -> None:
        pylsl = import_pylsl(lsl_config)
        self._lost_error: type[Exception] = importlib.import_module("pylsl.util").LostError
        self.description = StreamDescription.from_info(info)
        dtype = NUMPY_DTYPES.get(self.description.channel_format)
        if dtype is None:
            raise StreamMismatchError(f"Stream {self.description.name!r} has channel format "
                                      f"{self.description.channel_format}; the server reads {', '.join(NUMPY_DTYPES)}.")
        # recover=False: a dead outlet raises LostError at once; our watchdog re-resolves (also a
        # returning outlet with a new source_id, which liblsl's own recovery never finds).
        self._inlet = pylsl.StreamInlet(info, max_buflen=buffer_s, recover=False,
                                        processing_flags=pylsl.proc_clocksync)
        # liblsl writes the stream's own format and channels here; `mapping` gathers, converts and scales.
        self._raw = np.zeros((max_chunk, self.description.n_channels), dtype=dtype)
        self._mapped: np.ndarray | None = None
        self.mapping: ChannelMapping | None = None
        self._max_chunk = max_chunk

    def describe(self, timeout_s: float) -> StreamDescription:
        """The full stream info (channels, units, layout), which resolver results lack; no data flows yet."""
        self.description = StreamDescription.from_info(self._inlet.info(timeout=timeout_s))
        return self.description

    def open(self, timeout_s: float) -> None:
        """Connect; then read the full stream info (resolver results carry no desc, so no labels)."""
        self._inlet.open_stream(timeout=timeout_s)
        self.description = StreamDescription.from_info(self._inlet.info(timeout=timeout_s))

    def use_mapping(self, mapping: ChannelMapping | None) -> None:
        """Return the stream's channels through `mapping` from the next pull on (None: as they come, as float32)."""
        if mapping is not None and mapping.n_stream_channels != self.description.n_channels:
            raise ValueError(f"The mapping is for {mapping.n_stream_channels} channels, the stream has "
                             f"{self.description.n_channels}.")
        self.mapping = mapping
        n_out = mapping.n_channels if mapping is not None else self.description.n_channels
        self._mapped = np.zeros((self._max_chunk, n_out), dtype=np.float32)

    def pull(self, wait_s: float = 0.0, *, min_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Samples `(n, n_channels)` float32 uV (a view valid until the next pull) and timestamps `(n,)`.

        With a mapping, `n_channels` are the model's, in its order; without one, the stream's.
        With `wait_s > 0`, waits inside liblsl up to `wait_s` until `min_samples` (1 to `max_chunk`)
        have arrived, then takes what else is there, up to `max_chunk`; on timeout, what did arrive.
        The thread sleeps until the samples its caller needs are in instead of waking per chunk.
        With `wait_s == 0`, takes what is there now.
        Timestamps are in the local LSL clock (clock correction applied by liblsl). Raises
        ConnectionError when the outlet is gone.
        """
        if not 1 <= min_samples <= self._max_chunk:
            raise ValueError(f"min_samples must be between 1 and max_chunk ({self._max_chunk}), got {min_samples}; "
                             "clamp it to that range.")
        try:
            _, stamps = self._inlet.pull_chunk(timeout=wait_s, max_samples=self._max_chunk, dest_obj=self._raw,
                                               min_samples=min_samples if wait_s > 0 else None)
        except self._lost_error as exc:
            raise ConnectionError(f"Stream {self.description.name!r} was lost: {exc}") from exc
        n = len(stamps)
        raw = self._raw[:n]
        if self.mapping is not None:
            samples = self.mapping.apply(raw, out=self._mapped)
        elif raw.dtype == np.float32:
            samples = raw
        else:
            if self._mapped is None:
                self._mapped = np.zeros(self._raw.shape, dtype=np.float32)
            samples = self._mapped[:n]
            np.copyto(samples, raw, casting="unsafe")
        return samples, np.asarray(stamps, dtype=np.float64)

    @property
    def max_chunk(self) -> int:
        return self._max_chunk

    def time_correction(self) -> float:
        try:
            return float(self._inlet.time_correction(timeout=0.2))
        except Exception:  # a timeout here only means no fresh estimate
            return float("nan")

    def close(self) -> None:
        try:
            self._inlet.close_stream()
        except Exception:  # closing a broken inlet may fail; it is gone either way
            logger.debug("Closing inlet of %r failed.", self.description.name, exc_info=True)
