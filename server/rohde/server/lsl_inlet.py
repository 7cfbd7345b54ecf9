"""Thin LSL layer: resolve streams, describe them, check them against a model, pull chunks.

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

from rohde.core.errors import StreamMismatchError
from rohde.core.model_package import ModelMetadata

logger = logging.getLogger(__name__)

# liblsl channel-format codes (lsl_channel_format_t) -> names.
CHANNEL_FORMATS = {1: "float32", 2: "double64", 3: "string", 4: "int32", 5: "int16", 6: "int8", 7: "int64"}


def import_pylsl(default_config: Path | None = None) -> ModuleType:
    """pylsl, with `LSLAPICFG` set to `default_config` first when the environment has none."""
    if default_config is not None and "LSLAPICFG" not in os.environ:
        os.environ["LSLAPICFG"] = str(default_config)
    return importlib.import_module("pylsl")


@dataclass(frozen=True)
class StreamQuery:
    """Which streams to serve: every given property must match."""

    name: str | None = None
    type: str | None = None
    source_id: str | None = None

    def predicate(self) -> str:
        parts = [f"{key}='{value}'" for key, value in (("name", self.name), ("type", self.type),
                                                        ("source_id", self.source_id)) if value]
        return " and ".join(parts) if parts else "count(channel_format)>=0"

    def describe(self) -> str:
        return self.predicate()


@dataclass(frozen=True)
class StreamDescription:
    """What the server knows about one LSL stream, from its StreamInfo."""

    name: str
    type: str
    source_id: str
    uid: str
    hostname: str
    n_channels: int
    fs_hz: float
    channel_format: str
    channel_labels: tuple[str, ...] = field(default=())

    @classmethod
    def from_info(cls, info: Any) -> StreamDescription:
        return cls(
            name=info.name(),
            type=info.type(),
            source_id=info.source_id(),
            uid=info.uid(),
            hostname=info.hostname(),
            n_channels=int(info.channel_count()),
            fs_hz=float(info.nominal_srate()),
            channel_format=CHANNEL_FORMATS.get(int(info.channel_format()), str(info.channel_format())),
            channel_labels=tuple(_channel_labels(info)),
        )


def _channel_labels(info: Any) -> list[str]:
    """Labels from `desc/channels/channel/label` when the stream declares them."""
    labels: list[str] = []
    channel = info.desc().child("channels").child("channel")
    while not channel.empty() and len(labels) < info.channel_count():
        labels.append(channel.child_value("label"))
        channel = channel.next_sibling("channel")
    return labels if len(labels) == info.channel_count() else []


def check_stream_fits_model(stream: StreamDescription, meta: ModelMetadata) -> None:
    """Raise StreamMismatchError naming every difference between the stream and the model."""
    problems = []
    if stream.n_channels != meta.n_channels:
        problems.append(f"it has {stream.n_channels} channels, the model needs {meta.n_channels}")
    if abs(stream.fs_hz - meta.fs_hz) > 1e-6 * meta.fs_hz:
        problems.append(f"its nominal rate is {stream.fs_hz:g} Hz, the model needs {meta.fs_hz:g} Hz")
    if stream.channel_format != meta.input_dtype:
        problems.append(f"its channel format is {stream.channel_format}, the model needs {meta.input_dtype}")
    if problems:
        raise StreamMismatchError(
            f"Stream {stream.name!r} ({stream.source_id or stream.uid}) is refused for model {meta.name!r}: "
            + "; ".join(problems) + "."
        )


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
    """One open inlet with a preallocated pull buffer; `pull` waits in liblsl at most `wait_s`."""

    def __init__(self, info: Any, *, buffer_s: int, max_chunk: int, lsl_config: Path | None = None) -> None:
        pylsl = import_pylsl(lsl_config)
        self._lost_error: type[Exception] = importlib.import_module("pylsl.util").LostError
        self.description = StreamDescription.from_info(info)
        # recover=False: a dead outlet raises LostError at once; our watchdog re-resolves (also a
        # returning outlet with a new source_id, which liblsl's own recovery never finds).
        self._inlet = pylsl.StreamInlet(info, max_buflen=buffer_s, recover=False,
                                        processing_flags=pylsl.proc_clocksync)
        self._buffer = np.zeros((max_chunk, self.description.n_channels), dtype=np.float32)
        self._max_chunk = max_chunk

    def open(self, timeout_s: float) -> None:
        """Connect; then read the full stream info (resolver results carry no desc, so no labels)."""
        self._inlet.open_stream(timeout=timeout_s)
        self.description = StreamDescription.from_info(self._inlet.info(timeout=timeout_s))

    def pull(self, wait_s: float = 0.0, *, min_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Samples `(n, n_channels)` float32 (a view valid until the next pull) and timestamps `(n,)`.

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
            _, stamps = self._inlet.pull_chunk(timeout=wait_s, max_samples=self._max_chunk, dest_obj=self._buffer,
                                               min_samples=min_samples if wait_s > 0 else None)
        except self._lost_error as exc:
            raise ConnectionError(f"Stream {self.description.name!r} was lost: {exc}") from exc
        n = len(stamps)
        return self._buffer[:n], np.asarray(stamps, dtype=np.float64)

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
