"""`rohde record`: the protocol, its cue markers, the cued simulator, recordings that survive SIGTERM and a kill,
tapped holds in the disturbance mask. The whole chain with a real simulator, the server and the XDF loader is
`tests/training/test_personal.py`."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from rohde.cli import main
from rohde.core.errors import ConfigError
from rohde.core.gestures import DEFAULT_GESTURES
from rohde.core.layouts import grid_layout
from rohde.core.preprocessing import PreprocessingConfig, filter_recording
from rohde.core.recording import load_recording
from rohde.server.cue_listener import ReceivedCue, SimulatedPerformer
from rohde.server.cue_protocol import CalibrationProtocol, decode_marker, protocol_cues
from rohde.server.lsl_inlet import import_pylsl
from rohde.server.processes import ChildGroup, unique_id
from rohde.server.recorder import Journal, journal_path
from rohde.simulation.simulator import LiveSimulator

from .conftest import LSL_CONFIG, ROHDE, wait_for

TINY = CalibrationProtocol(gestures=("hand_close", "hand_open"), repetitions=3, hold_s=0.8, rest_s=0.6,
                           prepare_s=0.3, lead_in_s=0.5)


def test_default_protocol_takes_two_to_three_minutes_and_holds_every_gesture() -> None:
    protocol = CalibrationProtocol()
    assert 120 <= protocol.duration_s <= 180
    cues = protocol_cues(protocol)
    holds = [c for c in cues if c.phase == "hold"]
    assert sorted({c.gesture for c in holds}) == sorted(g for g in DEFAULT_GESTURES if g != "no_movement")
    assert all(sum(c.gesture == g for c in holds) == protocol.repetitions for g in protocol.gestures)
    assert cues[-1].phase == "done" and cues[-1].start_s == pytest.approx(protocol.duration_s)
    assert protocol.gesture_names[0] == "no_movement"  # the default vocabulary's rest class
    # Each hold is announced by an unusable prepare phase and followed by the rest class.
    k = cues.index(holds[0])
    assert [cues[k - 1].label, cues[k].label, cues[k + 1].label] == ["unusable", holds[0].gesture, "no_movement"]


def test_markers_read_back_and_plain_cue_streams_are_understood() -> None:
    cues = protocol_cues(CalibrationProtocol(gestures=("fist", "point"), repetitions=1, disturbed_trials=1))
    assert CalibrationProtocol(gestures=("fist",)).rest_class == "rest"  # custom names: the rest class is "rest"
    for cue in cues:
        info = decode_marker(cue.marker())
        assert (info.label, info.phase, info.index, info.total) == (cue.gesture, cue.phase, cue.index, len(cues))
    tapped = [decode_marker(c.marker()) for c in cues if c.condition == "CA"]
    assert tapped and all(info.condition == "CA" for info in tapped)
    assert decode_marker(["hand_close"]).phase == "hold" and decode_marker(["no_movement"]).label == "rest"
    with pytest.raises(ValueError, match="rest name"):
        CalibrationProtocol(gestures=("rest", "fist"))


def test_simulator_holds_the_gesture_it_is_told_and_maps_unknown_cues() -> None:
    sim = LiveSimulator(subject=7, session=1, schedule=("clean",))
    config = PreprocessingConfig(fs_hz=sim.fs_hz)
    rest_rms = np.sqrt(np.mean(filter_recording(sim.read(4096).samples, config)[2048:] ** 2))
    performer = SimulatedPerformer(lambda gesture, _: sim.set_gesture(gesture), sim.gesture_names, "no_movement")
    performer(ReceivedCue(decode_marker(["fist", "clean", json.dumps(
        {"cue": "fist", "phase": "hold", "remaining_s": 1, "index": 0, "total": 1})]), 0.0, "x"))
    chunk = sim.read(4096)
    mapped = performer.gesture_for(decode_marker(["fist", "clean", json.dumps(
        {"cue": "fist", "phase": "hold", "remaining_s": 1, "index": 1, "total": 1})]))
    assert mapped in sim.gesture_names and mapped != "no_movement"
    assert chunk.labels[-1] == sim.gesture_names.index(mapped)
    assert np.sqrt(np.mean(filter_recording(chunk.samples, config)[-2048:] ** 2)) > 1.5 * rest_rms
    sim.set_gesture("no_movement")
    assert sim.read(4096).labels[-1] == 0
    with pytest.raises(ValueError, match="not simulated"):
        sim.set_gesture("fist")


def _simulator(processes: ChildGroup, tmp_path: Path, name: str, cue_name: str) -> None:
    """`rohde simulate` following the cues: an unseen subject, typed ExG, no truth markers."""
    child = processes.start([ROHDE, "simulate", "--name", name, "--source-id", name, "--type", "ExG", "--subject", "7",
                             "--session", "1", "--schedule", "clean", "--no-markers", "--follow-cues", cue_name],
                            log=tmp_path / "simulator.log")
    pylsl = import_pylsl(LSL_CONFIG)
    wait_for(lambda: child.process.poll() is None and bool(pylsl.resolve_byprop("source_id", name, 1, 0.5)), 30, 0.1)


@pytest.mark.lsl
@pytest.mark.timeout(90)
def test_a_recording_stopped_by_sigterm_keeps_what_it_captured(processes: ChildGroup, tmp_path: Path) -> None:
    name, cue_name = unique_id("IntAmp"), unique_id("IntCues")
    _simulator(processes, tmp_path, name, cue_name)
    out = tmp_path / "stopped.rohde.npz"
    child = processes.start([ROHDE, "record", "--stream-name", name, "--stream-type", "ExG", "--cue-stream-name",
                             cue_name, "--out", str(out)], log=tmp_path / "record.log")
    cues = journal_path(out) / "cues.jsonl"
    wait_for(lambda: cues.exists() and cues.read_text().strip(), 30, 0.1)  # the protocol has started
    time.sleep(1.5)
    child.process.send_signal(signal.SIGTERM)
    assert child.process.wait(timeout=20) == 130, child.log_tail()
    rec = load_recording(out)
    assert rec.duration_s >= 1.5 and rec.provenance["interrupted"] is True
    assert not journal_path(out).exists()
    assert np.sum(rec.labels == 0) > 1.0 * rec.fs_hz  # the lead-in rest since the first cue is labelled


def test_the_journal_of_a_killed_recording_becomes_its_recording(tmp_path: Path) -> None:
    """A killed recorder leaves its journal, flushed chunk by chunk, a chunk perhaps cut mid-write."""
    sim = LiveSimulator(subject=7, schedule=("clean",))
    out = tmp_path / "killed.rohde.npz"
    meta = {"out": str(out), "fs_hz": sim.fs_hz, "layout": sim.layout.to_dict(), "subject": "u7", "session": "1",
            "gesture_names": list(TINY.gesture_names), "stream": {"name": "amp"}, "protocol": {}}
    journal = Journal(journal_path(out), meta)
    stamps = 100.0 + np.arange(3 * 2048) / sim.fs_hz
    cues = protocol_cues(TINY)
    for cue in cues[:4]:
        journal.cue(100.0 + cue.start_s, cue.marker())
    for k in range(0, len(stamps), 512):
        journal.append(sim.read(512).samples, stamps[k : k + 512])
    journal.close()
    with (journal_path(out) / "samples.f32").open("ab") as cut:  # half a sample of a chunk being written
        cut.write(b"\0" * 4 * 96)
    with pytest.raises(ConfigError, match="--recover"):
        Journal(journal_path(out), meta)  # a new recording never overwrites the journal of an unfinished one
    assert main(["record", "--recover", str(journal_path(out))]) == 0
    rec = load_recording(out)
    assert rec.n_samples == 3 * 2048 and rec.provenance["interrupted"] is True and not journal_path(out).exists()
    expected = np.full(rec.n_samples, -1)
    for cue in cues[:4]:
        expected[int(round(cue.start_s * sim.fs_hz)):] = TINY.gesture_names.index(cue.label) if cue.label in \
            TINY.gesture_names else -1
    assert np.array_equal(rec.labels, expected)


def test_tapped_holds_are_marked_in_the_disturbance_mask(tmp_path: Path) -> None:
    protocol = CalibrationProtocol(gestures=("hand_close",), repetitions=1, hold_s=0.5, rest_s=0.5, prepare_s=0.2,
                                   lead_in_s=0.2, disturbed_trials=1)
    cues = protocol_cues(protocol)
    fs, n = 1000.0, int(round(protocol.duration_s * 1000.0)) + 100
    out = tmp_path / "tapped.rohde.npz"
    layout = grid_layout(1, 2, 2, name="1x2x2")
    meta = {"out": str(out), "fs_hz": fs, "layout": layout.to_dict(), "subject": "u", "session": "1",
            "gesture_names": list(protocol.gesture_names), "stream": {}, "protocol": {}}
    journal = Journal(journal_path(out), meta)
    for cue in cues:
        journal.cue(cue.start_s, cue.marker())
    journal.append(np.random.default_rng(0).normal(size=(n, 4)), np.arange(n) / fs)
    journal.close()
    assert main(["record", "--recover", str(journal_path(out))]) == 0
    rec = load_recording(out)
    tapped = next(c for c in cues if c.phase == "hold" and c.condition == "CA")
    rows = rec.disturbance_mask.all(axis=1) if rec.disturbance_mask is not None else np.zeros(0, bool)
    assert rec.condition == "mixed" and rec.provenance["disturbed_seconds"] == pytest.approx(protocol.hold_s, abs=0.01)
    expected = np.zeros(n, dtype=bool)
    expected[int(round(tapped.start_s * fs)) : int(round((tapped.start_s + tapped.duration_s) * fs))] = True
    assert rows.sum() == expected.sum() and np.array_equal(rows, expected)
    assert rec.provenance["interrupted"] is False  # the journal holds the `done` cue
