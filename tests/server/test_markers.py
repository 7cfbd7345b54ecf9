"""The decision marker outlet read by a real LSL inlet on loopback."""

from __future__ import annotations

import json

import pytest

from rohde.server.lsl_inlet import import_pylsl
from rohde.server.markers import DecisionMarkerOutlet
from rohde.server.messages import PredictionMessage
from rohde.server.processes import unique_id

from .conftest import LSL_CONFIG, wait_for

pytestmark = [pytest.mark.lsl, pytest.mark.timeout(60)]


def decision(seq: int, lsl_time: float, *, rejected: bool = False) -> PredictionMessage:
    return PredictionMessage(
        stream_id="amp-1", seq=seq, lsl_time=lsl_time, server_time=0.0, gesture="g1", gesture_index=1,
        confidence=0.876543, window_gesture="g1", probabilities=[0.1, 0.876543, 0.023457], labels=["rest", "g1", "g2"],
        rejected=rejected, reject_reason="low_confidence" if rejected else None, vote_k=5, confidence_threshold=0.5,
        latency_ms=1.0, model_name="good", model_version="1", model_generation=1, bad_channels=[],
    )


def test_each_decision_is_one_json_marker_at_the_window_time() -> None:
    pylsl = import_pylsl(LSL_CONFIG)
    name, source_id = unique_id("decisions"), unique_id("decisions-sid")
    outlet = DecisionMarkerOutlet(name=name, source_id=source_id, lsl_config=LSL_CONFIG)
    (info,) = wait_for(lambda: pylsl.resolve_byprop("source_id", source_id, 1, 1.0), 10)
    inlet = pylsl.StreamInlet(info)
    inlet.open_stream(timeout=5)
    full = inlet.info(timeout=5)
    assert (full.name(), full.type(), full.channel_count()) == (name, "Decisions", 1)
    assert full.nominal_srate() == pylsl.IRREGULAR_RATE and full.channel_format() == pylsl.cf_string
    assert full.desc().child_value("content") == "RoHDE gesture decisions (JSON per marker)"
    t0 = pylsl.local_clock()
    for seq in range(3):
        outlet.publish(decision(seq, t0 + seq * 0.05, rejected=seq == 2))
    markers: list[list[str]] = []
    stamps: list[float] = []

    def pulled() -> bool:
        chunk, chunk_stamps = inlet.pull_chunk(timeout=0.2)
        markers.extend(chunk)
        stamps.extend(chunk_stamps)
        return len(markers) >= 3

    wait_for(pulled, 10, interval_s=0)
    assert [json.loads(m[0]) for m in markers] == [
        {"stream_id": "amp-1", "seq": seq, "gesture": "g1", "confidence": 0.8765, "rejected": seq == 2}
        for seq in range(3)
    ]
    assert stamps == pytest.approx([t0, t0 + 0.05, t0 + 0.1], abs=1e-9)  # the windows' LSL times, not arrival
    outlet.close()
    assert pylsl.resolve_byprop("source_id", source_id, 0, 1.0) == []  # the stream is gone


def test_close_is_idempotent_and_later_decisions_are_dropped() -> None:
    outlet = DecisionMarkerOutlet(name=unique_id("markers-close"), source_id=unique_id("src"), lsl_config=LSL_CONFIG)
    outlet.close()
    outlet.close()
    outlet.publish(decision(0, 1.0))  # after close: dropped, no error
