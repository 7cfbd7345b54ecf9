"""Follows the calibration cue stream (`rohde.server.cue_protocol`) on an owned thread.

The server's lifespan runs one to forward every cue to the WebSocket clients (`CueMessage`);
`rohde simulate --follow-cues` runs one to make the simulated person hold the gesture each cue asks
for. The stream is found by name and type; when it ends (each `rohde record` run publishes its own),
the listener looks for the next one.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rohde.core.errors import ConfigError
from rohde.server.cue_protocol import CUE_STREAM_NAME, CUE_STREAM_TYPE, CueInfo, decode_marker
from rohde.server.lsl_inlet import StreamQuery, StreamResolver, import_pylsl
from rohde.server.threads import OwnedThread

logger = logging.getLogger(__name__)

RESOLVE_POLL_S = 0.1  # how often the resolver's results are read while no cue stream is open
PULL_WAIT_S = 0.2


@dataclass(frozen=True)
class ReceivedCue:
    cue: CueInfo
    lsl_time: float  # the cue's LSL time stamp (local clock, corrected)
    source_id: str  # the cue stream's source_id


CueHandler = Callable[[ReceivedCue], None]


class CueListener:
    """Resolves the cue stream `name` (type `Markers`) and calls `on_cue` for each cue, in order."""

    def __init__(self, on_cue: CueHandler, *, name: str = CUE_STREAM_NAME, stream_type: str = CUE_STREAM_TYPE,
                 lsl_config: Path | None = None) -> None:
        if not name:
            raise ConfigError("The cue stream needs a name (default RoHDE-Cues).")
        self._pylsl = import_pylsl(lsl_config)
        self._lost_error: type[Exception] = importlib.import_module("pylsl.util").LostError
        self._lsl_config = lsl_config
        self.query = StreamQuery(name=name, type=stream_type)
        self._on_cue = on_cue
        self._thread = OwnedThread(self._run, name=f"rohde-cues-{name}")
        self.received = 0
        self.error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 3.0) -> None:
        """Idempotent; returns within a pull (0.2 s)."""
        self._thread.stop(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.alive

    def _open(self, resolver: StreamResolver) -> Any | None:
        for info in resolver.results():
            if int(info.channel_format()) != self._pylsl.cf_string:
                continue
            inlet = self._pylsl.StreamInlet(info, recover=False, processing_flags=self._pylsl.proc_clocksync)
            try:
                inlet.open_stream(timeout=2.0)
            except Exception:  # an outlet that closed since it was resolved: look again
                logger.debug("Cue stream %s went away before it opened.", info.source_id(), exc_info=True)
                continue
            logger.info("Following cue stream %r (%s).", info.name(), info.source_id())
            return inlet
        return None

    def _run(self) -> None:
        stop = self._thread.stop_event
        inlet: Any | None = None
        source_id = ""
        # liblsl's continuous resolver finds a new cue stream within a fraction of a second, without waiting.
        resolver = StreamResolver(self.query, lsl_config=self._lsl_config)
        try:
            while not stop.is_set():
                if inlet is None:
                    inlet = self._open(resolver)
                    if inlet is None:
                        stop.wait(RESOLVE_POLL_S)
                        continue
                    source_id = inlet.info(timeout=2.0).source_id()
                    continue
                try:
                    markers, stamps = inlet.pull_chunk(timeout=PULL_WAIT_S)
                except self._lost_error:
                    logger.info("Cue stream %s ended; looking for the next one.", source_id)
                    inlet = None
                    continue
                for marker, stamp in zip(markers, stamps, strict=True):
                    self.received += 1
                    try:
                        cue = decode_marker(marker, counter=self.received - 1)
                    except ConfigError:
                        logger.warning("Ignoring an empty cue marker on %s.", source_id)
                        continue
                    self._on_cue(ReceivedCue(cue=cue, lsl_time=float(stamp), source_id=source_id))
        except Exception as exc:  # surfaces in /health through `error`
            logger.exception("The cue listener failed.")
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            resolver.close()


class SimulatedPerformer:
    """Makes the simulated person (`set_gesture(gesture, cue LSL time)`) do what each cue asks: the cued
    gesture while a hold lasts, rest otherwise. A cue naming a gesture the simulator lacks (a user's own
    vocabulary) is mapped onto the simulator's unused gestures in order of first appearance, so any
    protocol can be tried without a person."""

    def __init__(self, set_gesture: Callable[[str, float], None], gestures: tuple[str, ...], rest: str) -> None:
        self._set_gesture = set_gesture
        self._rest = rest
        self._known = set(gestures)
        self._spare = [g for g in gestures if g != rest]
        self._mapped: dict[str, str] = {}

    def gesture_for(self, cue: CueInfo) -> str:
        if cue.phase != "hold":
            return self._rest
        if cue.label in self._known:
            return cue.label
        if cue.label not in self._mapped:
            free = [g for g in self._spare if g not in self._mapped.values()]
            if not free:
                logger.warning("Cue %r has no simulated gesture left; resting instead.", cue.label)
                return self._rest
            self._mapped[cue.label] = free[0]
            logger.info("Cue %r is performed as the simulated gesture %r.", cue.label, free[0])
        return self._mapped[cue.label]

    def __call__(self, received: ReceivedCue) -> None:
        self._set_gesture(self.gesture_for(received.cue), received.lsl_time)
