"""A personal model: the split by repetition, one class list over a user's recordings, and the whole chain
`rohde simulate --follow-cues` -> `rohde record` -> `rohde train --quick` -> `PUT /models/active` on a
running `rohde serve`, with real processes, LSL and the WebSocket (the recording also checked against an
XDF file of the same streams read by the XDF loader)."""

from __future__ import annotations

import json
import logging
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from rohde.cli import main
from rohde.core.datasets import load_xdf_recording
from rohde.core.errors import ConfigError
from rohde.core.gestures import UNUSABLE
from rohde.core.model_package import load_model_package
from rohde.core.preprocessing import PreprocessingConfig, filter_recording
from rohde.core.recording import Recording, load_recording
from rohde.core.xdf import XdfStream, emg_desc, write_xdf
from rohde.server.cue_protocol import CalibrationProtocol, protocol_cues
from rohde.server.lsl_inlet import StreamQuery, import_pylsl
from rohde.server.processes import ChildGroup, free_port, unique_id
from rohde.server.recorder import CalibrationRecorder, RecordOptions
from rohde.server.settings import default_lsl_config
from rohde.simulation.simulator import LiveSimulator
from rohde.training.personal import class_names, load_user_recordings, relabel
from rohde.training.split import hold_repetitions, repetition_parts, settle_labels

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ROHDE = str(Path(sys.executable).with_name("rohde"))
PROTOCOL = CalibrationProtocol(gestures=("hand_close", "hand_open"), repetitions=3, hold_s=1.0, rest_s=0.6,
                               prepare_s=0.3, lead_in_s=0.5)


def cued_recording(protocol: CalibrationProtocol, *, names: tuple[str, ...] | None = None) -> Recording:
    """What `rohde record` writes for `protocol` performed by the simulator, built offline (no LSL)."""
    sim = LiveSimulator(subject=7, session=1, schedule=("clean",))
    samples, labels = [], []
    classes = protocol.gesture_names
    performed = dict(zip(protocol.gestures, ("hand_close", "hand_open", "wrist_flexion"), strict=False))
    for cue in protocol_cues(protocol)[:-1]:
        sim.set_gesture(performed[cue.gesture] if cue.phase == "hold" else "no_movement")
        n = int(round(cue.duration_s * sim.fs_hz))
        samples.append(sim.read(n).samples)
        labels.append(np.full(n, classes.index(cue.label) if cue.label in classes else UNUSABLE, dtype=np.int16))
    return Recording(samples=np.concatenate(samples), fs_hz=sim.fs_hz, layout=sim.layout,
                     labels=np.concatenate(labels), gesture_names=names or classes, subject="u7", trial="cal")


def test_the_split_by_repetition_tests_the_last_hold_and_validates_the_one_before() -> None:
    rec = cued_recording(CalibrationProtocol(gestures=("hand_close", "hand_open"), repetitions=4, hold_s=0.5,
                                             rest_s=0.4, prepare_s=0.25, lead_in_s=0.3))
    gesture, repetition = hold_repetitions(rec.labels, rec.gesture_names)
    assert {int(repetition[gesture == g].max()) for g in (1, 2)} == {4}
    parts = repetition_parts(rec, settle_ms=100.0, test_here=True)
    assert set(parts) == {"train", "val", "test"}
    for role, part in parts.items():
        start = int(np.flatnonzero((rec.samples == part.samples[0]).all(axis=1))[0])  # parts are cropped
        used = np.flatnonzero(part.labels != UNUSABLE) + start
        reps = set(repetition[used].tolist())
        assert reps == {"train": {0, 1, 2}, "val": {3}, "test": {4}}[role], role
        assert set(part.labels[part.labels != UNUSABLE].tolist()) == {0, 1, 2}  # rest and both gestures
        # The first 100 ms after every cue are not used.
        changes = np.flatnonzero(np.diff(rec.labels)) + 1
        assert not np.isin(used, (changes[:, None] + np.arange(int(0.1 * rec.fs_hz))).ravel()).any()
    # Tapped (disturbed) samples are kept out of every clean part.
    mask = np.zeros(rec.samples.shape, dtype=bool)
    first_hold = int(np.flatnonzero(rec.labels == 1)[0])
    mask[first_hold : first_hold + 300] = True
    tapped = repetition_parts(replace(rec, disturbance_mask=mask), settle_ms=0.0, test_here=True)["train"]
    clean = repetition_parts(rec, settle_ms=0.0, test_here=True)["train"]
    assert np.sum(clean.labels != UNUSABLE) - np.sum(tapped.labels != UNUSABLE) == 300
    with pytest.raises(ConfigError, match="fewer than 3 times"):
        repetition_parts(cued_recording(PROTOCOL.__class__(gestures=("hand_close",), repetitions=2, hold_s=0.3,
                                                           rest_s=0.3, prepare_s=0.2)), settle_ms=0, test_here=True)


def test_one_class_list_over_recordings_with_their_own_names(caplog: pytest.LogCaptureFixture) -> None:
    custom = cued_recording(CalibrationProtocol(gestures=("fist", "point"), repetitions=1, hold_s=0.3,
                                                rest_s=0.3, prepare_s=0.2, lead_in_s=0.2))
    assert custom.gesture_names == ("rest", "fist", "point")
    assert class_names([custom], None) == ["rest", "fist", "point"]
    with caplog.at_level(logging.WARNING):
        assert class_names([custom], ["point"]) == ["rest", "point"]
    assert "'fist'" in caplog.text  # a cue left out is named, never dropped silently
    with pytest.raises(ConfigError, match="no recording holds"):
        class_names([custom], ["point", "thumbs_up"])
    relabelled = relabel(custom, ["rest", "point"])
    assert np.array_equal(relabelled.labels == 1, custom.labels == 2) and not np.any(relabelled.labels == 2)


def test_an_xdf_of_custom_cues_reads_back_with_their_classes(tmp_path: Path) -> None:
    """LabRecorder's file of an amplifier (no gestures in its desc) and the RoHDE-Cues stream of a custom protocol."""
    protocol = CalibrationProtocol(gestures=("fist", "point"), repetitions=3, hold_s=0.3, rest_s=0.3, prepare_s=0.2,
                                   lead_in_s=0.2)
    rec = cued_recording(protocol)
    cues = protocol_cues(protocol)
    xdf = write_xdf(tmp_path / "custom.xdf", [
        XdfStream(name="amp", type="EMG", nominal_srate=rec.fs_hz, channel_format="float32",
                  time_stamps=10.0 + np.arange(rec.n_samples) / rec.fs_hz, time_series=rec.samples,
                  desc=emg_desc(rec.layout)),
        XdfStream(name="RoHDE-Cues", type="Markers", nominal_srate=0.0, channel_format="string",
                  time_stamps=np.array([10.0 + c.start_s for c in cues]), time_series=[c.marker() for c in cues])])
    loaded = load_user_recordings([xdf])[xdf][0]
    assert loaded.gesture_names == ("rest", "fist", "point")  # `unusable` (announcements) is no class
    assert np.sum(loaded.labels != rec.labels) <= len(cues)  # at most a sample at a cue's edge (rounding)
    only_point = load_user_recordings([xdf], gestures=["point"])[xdf][0]
    assert only_point.gesture_names == ("rest", "point")


@pytest.mark.lsl
@pytest.mark.timeout(150)
def test_record_train_and_switch_a_running_server_to_the_personal_model(tmp_path: Path) -> None:
    name, cues, token = unique_id("MyAmp"), unique_id("Cues"), "admin-token-for-the-test"
    models = tmp_path / "models"
    models.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with ChildGroup() as children:
        children.start([ROHDE, "serve", "--port", str(port), "--models-dir", str(models), "--model", "none-yet",
                        "--stream-type", "ExG", "--no-marker-outlet"], log=tmp_path / "server.log",
                       extra_env={"ROHDE_ADMIN_TOKEN": token, "ROHDE_CUE_STREAM_NAME": cues,
                                  "ROHDE_RESOLVE_INTERVAL_S": "0.2"})
        children.start([ROHDE, "simulate", "--name", name, "--source-id", name, "--type", "ExG", "--subject", "7",
                        "--schedule", "clean", "--no-markers", "--extra-channels", "2", "--follow-cues", cues],
                       log=tmp_path / "simulator.log")
        pylsl = import_pylsl(default_lsl_config())
        assert pylsl.resolve_byprop("source_id", name, 1, 30.0), "the simulated amplifier did not appear"
        _wait(lambda: httpx.get(f"{base}/health", timeout=1).status_code == 200, 40)
        messages: list[dict[str, Any]] = []
        listening = threading.Event()
        stop = threading.Event()
        listener = threading.Thread(target=_collect, args=(port, messages, listening, stop), daemon=True)
        listener.start()
        assert listening.wait(20)

        options = RecordOptions(out=tmp_path / "cal", query=StreamQuery(name=name, type="ExG"), protocol=PROTOCOL,
                                subject="u7", cue_stream_name=cues)
        recording = CalibrationRecorder(options, lsl_config=default_lsl_config(), echo=lambda _: None).run()
        rec = load_recording(recording)
        assert rec.n_channels == 192  # the counter and trigger channels were left out
        assert PROTOCOL.duration_s <= rec.duration_s <= PROTOCOL.duration_s + 3.0  # plus what the inlet held
        assert rec.gesture_names == ("no_movement", "hand_close", "hand_open") and not rec.provenance["interrupted"]
        # The simulated person followed the cues: once settled, EMG is stronger in holds than at rest.
        rms = np.sqrt(np.mean(filter_recording(rec.samples, PreprocessingConfig(fs_hz=rec.fs_hz)) ** 2, axis=1))
        settled = settle_labels(rec.labels, int(0.45 * rec.fs_hz))
        assert np.median(rms[settled > 0]) > 2 * np.median(rms[settled == 0])
        # LabRecorder's file of the same EMG and cue streams reads back with the same labels (the XDF loader).
        markers = rec.provenance["cues"]
        xdf = write_xdf(tmp_path / "sub-u7_ses-1_task-cal_run-001_eeg.xdf", [
            XdfStream(name=name, type="ExG", nominal_srate=rec.fs_hz, channel_format="float32",
                      time_stamps=rec.provenance["first_timestamp"] + np.arange(rec.n_samples) / rec.fs_hz,
                      time_series=rec.samples, desc=emg_desc(rec.layout)),
            XdfStream(name=cues, type="Markers", nominal_srate=0.0, channel_format="string",
                      time_stamps=np.array([m[0] for m in markers]), time_series=[m[1:] for m in markers])])
        from_xdf = load_xdf_recording(xdf)
        as_names = np.array(["-", *rec.gesture_names])[rec.labels + 1]
        assert np.mean(as_names == np.array(["-", *from_xdf.gesture_names])[from_xdf.labels + 1]) > 0.999
        forwarded = [m for m in messages if m["kind"] == "cue"]
        assert [(m["phase"], m["label"]) for m in forwarded] == [(c.phase, c.gesture) for c in protocol_cues(PROTOCOL)]

        assert main(["train", "--data", str(recording), "--out", str(models / "mine"), "--quick", "--config",
                     str(CONFIGS / "tiny.json"), "--work-dir", str(tmp_path / "work"), "--no-progress"]) == 0
        report = json.loads((models / "mine" / "report" / "report.json").read_text())
        assert report["name"] == "mine" and set(report["models"]) == {"rohde"} and report["fraction_sweep"] == {}
        assert report["labels"] == ["no_movement", "hand_close", "hand_open"]

        answer = httpx.put(f"{base}/models/active", json={"name": "mine"},
                           headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["name"] == "mine"
        _wait(lambda: httpx.get(f"{base}/ready", timeout=1).status_code == 200, 20)
        _wait(lambda: any(m["kind"] == "prediction" and m["model_name"] == "mine" and m["stream_id"] == name
                          for m in list(messages)), 30)
        # The trained package carries its training data's MAV map, so the stream aligns to it (label-free).
        reference = load_model_package(models / "mine").metadata.alignment
        assert reference is not None and len(reference["activity_uv"]) == 192
        assert reference["seconds"] > 0
        (stream,) = [s for s in httpx.get(f"{base}/streams", timeout=5).json()["streams"] if s["stream_id"] == name]
        assert stream["alignment"]["state"] == "collecting", stream["alignment"]  # 30 s warm-up by default
        stop.set()
        listener.join(5)


def _wait(predicate: Any, timeout_s: float) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"not reached within {timeout_s} s")


def _collect(port: int, messages: list[dict[str, Any]], listening: threading.Event, stop: threading.Event) -> None:
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=20) as ws:
        listening.set()
        while not stop.is_set():
            try:
                messages.append(json.loads(ws.recv(timeout=0.2)))
            except TimeoutError:
                continue


def test_train_and_test_recordings_split_only_the_training_ones() -> None:
    from rohde.training.config import PipelineConfig, SplitConfig
    from rohde.training.split import make_split

    short = CalibrationProtocol(gestures=("hand_close", "hand_open"), repetitions=2, hold_s=0.4, rest_s=0.3,
                                prepare_s=0.2, lead_in_s=0.2)
    train, test = cued_recording(short), replace(cued_recording(short), session="2")
    config = PipelineConfig(split=SplitConfig(mode="repetitions", train_paths=("a",), test_paths=("b",),
                                              settle_ms=100.0))
    split = make_split(config, data_dir=Path(), load=lambda p: {"a": [train], "b": [test]}[str(p)])
    assert [r.trial for r in split.train] == ["cal-train"] and [r.trial for r in split.val] == ["cal-val"]
    clean_tests = [r for r in split.test if r.condition == "clean"]
    assert len(clean_tests) == 1 and clean_tests[0].session == "2" and clean_tests[0].n_samples == test.n_samples
    assert sorted({r.condition for r in split.test}) == ["CA", "LC", "clean"]  # injected for the disturbed tests
    assert {r.condition for r in split.seen_disturbed} == {"CA", "LC"}  # what the GAN learns from
