"""An LSL marker stream of the server's decisions, so LSL recorders store gestures beside the EMG."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from rohde.server.lsl_inlet import import_pylsl
from rohde.server.messages import PredictionMessage

logger = logging.getLogger(__name__)


class DecisionMarkerOutlet:
    """One irregular-rate string stream (type `Decisions`); one JSON marker per decision.

    Each marker is stamped with the LSL time of the window's last sample, so it lines up with the
    EMG it was decided on.
    """

    def __init__(self, *, name: str, source_id: str, lsl_config: Path | None = None) -> None:
        pylsl = import_pylsl(lsl_config)
        # Type "Decisions", not "Markers": readers that take the first marker stream as the truth cues
        # must not pick up the decisions instead.
        info = pylsl.StreamInfo(name, "Decisions", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, source_id)
        info.desc().append_child_value("content", "RoHDE gesture decisions (JSON per marker)")
        self._outlet: Any = pylsl.StreamOutlet(info)
        self.name = name

    def publish(self, message: PredictionMessage) -> None:
        marker = json.dumps({
            "stream_id": message.stream_id, "seq": message.seq, "gesture": message.gesture,
            "confidence": round(message.confidence, 4), "rejected": message.rejected,
        })
        outlet = self._outlet
        if outlet is not None:  # a decision racing with close() is dropped, not an error
            outlet.push_sample([marker], message.lsl_time)

    def close(self) -> None:
        """Idempotent. Dropping the reference destroys the outlet; liblsl announces the stream's end to inlets."""
        self._outlet = None
