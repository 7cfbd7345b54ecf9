"""Streams as real amplifier apps publish them, served by the real server pipeline on loopback LSL.

One server (in-process) serves, under one stream name and with no configuration beyond that name, a
TMSi-SAGA-style stream typed `EEG` (UNI channels in uVolt, BIP, STATUS and COUNTER beside them), a
Quattrocento-style `ExG` stream with a counter and a trigger appended, shuffled int32-nV and int16
streams, a double-in-volts stream typed `eeg`, an unlabelled stream and one whose labels name another
layout. Each decision is placed in its source by the truth markers and compared with the same window run
offline on the source in the model's order (`test_e2e.compare_with_offline`): a stream whose channels
were picked, ordered or scaled wrongly would disagree.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from rohde.core.layouts import grid_layout
from rohde.server.amplifier import LslAmplifier, RecordingSource
from rohde.server.lsl_inlet import InletReader, StreamQuery, import_pylsl, resolve
from rohde.server.processes import ChildGroup, unique_id

from .conftest import LSL_CONFIG, ModelSet, RunningOutlet, wait_for
from .test_e2e import collect as e2e_collect
from .test_e2e import compare_with_offline, start_server
from .test_live import server

pytestmark = [pytest.mark.lsl, pytest.mark.timeout(150)]
STALE_AFTER_S = 5.0
logger = logging.getLogger(__name__)  # figures: run with --log-cli-level=INFO


class TmsiStyleAmplifier(LslAmplifier):
    """The channels as a TMSi SAGA app describes them: `UNI n` (type EEG, uVolt), then two bipolar inputs,
    STATUS and COUNTER."""

    EXTRA = (("BIP 1", "BIP", "µVolt"), ("BIP 2", "BIP", "µVolt"), ("STATUS", "STATUS", "-"),
             ("COUNTER", "COUNTER", "-"))

    def _emg_info(self, stream_type: str) -> Any:
        pylsl = self._pylsl
        n = self.source.n_channels
        info = pylsl.StreamInfo(self.name, stream_type, n + len(self.EXTRA), self.source.fs_hz, "float32",
                                self.source_id)
        channels = info.desc().append_child("channels")
        for label, kind, unit in [*((f"UNI {k + 1}", "EEG", "µVolt") for k in range(n)), *self.EXTRA]:
            channel = channels.append_child("channel")
            channel.append_child_value("label", label)
            channel.append_child_value("type", kind)
            channel.append_child_value("unit", unit)
        return info

    def encode(self, samples_uv: np.ndarray, labels: np.ndarray, first_index: int) -> np.ndarray:
        extra = np.zeros((len(labels), len(self.EXTRA)), np.float32)
        extra[:, :2] = 1e4  # bipolar inputs far larger than EMG: served, they would wreck every decision
        extra[:, 3] = first_index + np.arange(len(labels))
        return np.ascontiguousarray(np.concatenate([samples_uv, extra], axis=1), dtype=np.float32)


class UnlabelledWideAmplifier(LslAmplifier):
    """Two undescribed channels of large noise, then the model's channels, and no desc at all."""

    def _emg_info(self, stream_type: str) -> Any:
        return self._pylsl.StreamInfo(self.name, stream_type, self.source.n_channels + 2, self.source.fs_hz,
                                      "float32", self.source_id)

    def encode(self, samples_uv: np.ndarray, labels: np.ndarray, first_index: int) -> np.ndarray:
        noise = np.random.default_rng(first_index).normal(0.0, 1e4, (len(labels), 2))
        return np.ascontiguousarray(np.concatenate([noise, samples_uv], axis=1), dtype=np.float32)


def collect(client: Any, stream_ids: set[str], seconds: float) -> dict[str, list[dict[str, Any]]]:
    """Every prediction of the given streams over `seconds`, by stream id."""
    predictions: dict[str, list[dict[str, Any]]] = {sid: [] for sid in stream_ids}
    with client.websocket_connect("/ws") as ws:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            message = json.loads(ws.receive_text())
            if message["kind"] == "prediction" and message["stream_id"] in predictions:
                predictions[message["stream_id"]].append(message)
    return predictions


def check_against_offline(model_set: ModelSet, key: str, predictions: list[dict[str, Any]], truth: Any) -> None:
    recording = model_set.recording
    markers, stamps = truth.pull_chunk(timeout=1.0)
    loops = 40  # the outlets loop the 8 s recording
    live, offline, agreement = compare_with_offline(
        predictions, markers, stamps, samples=np.tile(recording.samples, (loops, 1)),
        labels=np.tile(recording.labels, loops), fs_hz=recording.fs_hz,
        package_dir=model_set.models_dir / "good", what=key)
    assert agreement >= 0.9 and live >= offline - 0.05, (key, live, offline, agreement)


def truth_inlet(pylsl: Any, source_id: str) -> Any:
    (info,) = wait_for(lambda: pylsl.resolve_byprop("source_id", f"{source_id}-truth", 1, 1.0), 30)
    inlet = pylsl.StreamInlet(info, processing_flags=pylsl.proc_clocksync)
    inlet.open_stream(timeout=5)
    return inlet


def test_amplifier_conventions_are_mapped_served_or_refused(model_set: ModelSet) -> None:
    name = unique_id("amps")
    recording = model_set.recording
    pylsl = import_pylsl(LSL_CONFIG)
    served: dict[str, LslAmplifier] = {}

    def add(key: str, amp_type: type[LslAmplifier] = LslAmplifier, **options: Any) -> None:
        served[key] = amp_type(RecordingSource(recording), name=name, source_id=f"{name}-{key}",
                               lsl_config=LSL_CONFIG, **options)

    add("tmsi", TmsiStyleAmplifier, stream_type="EEG")
    add("quattrocento", stream_type="ExG", extra_channels=2)
    add("int32", stream_type="EMG", channel_format="int32", shuffle_seed=7)
    add("int16", stream_type="EMG", channel_format="int16", shuffle_seed=2, extra_channels=3)
    add("double", stream_type="eeg", channel_format="double64")
    other_layout = dataclasses.replace(recording, layout=grid_layout(2, 2, 4))  # 16 channels on two grids
    contradicting = LslAmplifier(RecordingSource(other_layout), name=name, source_id=f"{name}-contra",
                                 markers=False, lsl_config=LSL_CONFIG)
    unlabelled = pylsl.StreamOutlet(pylsl.StreamInfo(name, "EMG", 16, recording.fs_hz, "float32", f"{name}-plain"))
    wide = UnlabelledWideAmplifier(RecordingSource(recording), name=name, source_id=f"{name}-wide", markers=False,
                                   lsl_config=LSL_CONFIG)
    truth = {key: truth_inlet(pylsl, f"{name}-{key}") for key in served}
    threads = [threading.Thread(target=amp.run, daemon=True) for amp in [*served.values(), contradicting, wide]]
    try:
        for thread in threads:
            thread.start()
        # Loss is not what this test is about: a loaded machine may starve the in-process outlets for a second.
        with server(model_set, name, max_streams=10, stale_after_s=STALE_AFTER_S) as client:
            ids = {*(f"{name}-{key}" for key in served), f"{name}-contra", f"{name}-plain", f"{name}-wide"}
            wait_for(lambda: {s["stream_id"] for s in client.get("/streams").json()["streams"]} == ids, 20)
            predictions = collect(client, {f"{name}-{key}" for key in served}, 11.0)
            rows = {s["stream_id"]: s for s in client.get("/streams").json()["streams"]}
    finally:
        for amp in [*served.values(), contradicting, wide]:
            amp.stop()
        for thread in threads:
            thread.join(5)
        del unlabelled

    refused = rows[f"{name}-contra"]
    assert refused["state"] == "refused" and refused["channel_mapping"] is None
    assert "its channel labels contradict the model's electrode layout: G2R1C1, " in refused["reason"]
    assert "the model's G1R3C1, G1R4C1, " in refused["reason"]
    plain = rows[f"{name}-plain"]["channel_mapping"]  # no desc: taken in stream order, and said so
    assert plain["method"] == "stream_order" and plain["stream_channels"] == list(range(16))
    assert plain["notes"] == ["the stream names no channel labels: channels taken in stream order",
                              "no unit given for 16 channels: assumed uV"]

    mappings = {key: rows[f"{name}-{key}"]["channel_mapping"] for key in served}
    assert {key: rows[f"{name}-{key}"]["state"] for key in served} == dict.fromkeys(served, "connected")
    assert mappings["tmsi"]["method"] == "numbered_labels" and mappings["tmsi"]["units"] == {"µVolt": 16}
    assert mappings["tmsi"]["dropped"] == ["16:BIP 1", "17:BIP 2", "18:STATUS", "19:COUNTER"]
    assert mappings["quattrocento"]["dropped"] == ["16:Counter", "17:Trigger"]
    assert mappings["quattrocento"]["method"] == "labels" and not mappings["quattrocento"]["reordered"]
    for key, unit in (("int32", "nanovolts"), ("int16", "0.5 microvolts")):
        order = served[key].order  # stream channel j carries model channel order[j]
        assert mappings[key]["reordered"] and mappings[key]["units"] == {unit: 16}
        assert [int(order[j]) for j in mappings[key]["stream_channels"]] == list(range(16))
    assert mappings["int16"]["dropped"] == ["16:Counter", "17:Trigger", "18:AUX1"]
    assert mappings["double"]["units"] == {"volts": 16} and mappings["double"]["notes"] == []

    assert rows[f"{name}-wide"]["state"] == "refused" and rows[f"{name}-wide"]["reason"].endswith(
        "it has 18 channels, the model needs 16, and their types (untyped: 18) do not say which: select them with "
        "--channels / ROHDE_STREAM_CHANNELS (0-based indices, ranges such as 0-15, labels or type:NAME).")
    for key, inlet in truth.items():
        check_against_offline(model_set, key, predictions[f"{name}-{key}"], inlet)


def test_explicitly_selected_channels_are_served(tmp_path: Path, model_set: ModelSet, processes: ChildGroup,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`rohde serve --stream-type exg --channels 2-17` (a subprocess) on an undescribed 18-channel stream."""
    name = unique_id("select")
    monkeypatch.setenv("ROHDE_STALE_AFTER_S", str(STALE_AFTER_S))  # the server inherits it
    wide = UnlabelledWideAmplifier(RecordingSource(model_set.recording), name=name, source_id=name,
                                   stream_type="ExG", lsl_config=LSL_CONFIG)
    thread = threading.Thread(target=wide.run, daemon=True)
    thread.start()
    try:
        base = start_server(processes, tmp_path, model_set, name, "--stream-type", "exg", "--channels", "2-17")
        assert httpx.get(f"{base}/streams").json()["query"] == f"name={name!r} and type in exg; channels 2-17"
        wait_for(lambda: [s["state"] for s in httpx.get(f"{base}/streams").json()["streams"]] == ["connected"], 40)
        predictions, markers, stamps = e2e_collect(base, name, 9.0)
        (row,) = httpx.get(f"{base}/streams").json()["streams"]
    finally:
        wide.stop()
        thread.join(5)
    mapping = row["channel_mapping"]
    assert mapping["method"] == "selection" and mapping["stream_channels"] == list(range(2, 18))
    assert mapping["dropped"] == ["0", "1"] and "no unit given for 16 channels: assumed uV" in mapping["notes"]
    recording, loops = model_set.recording, 40
    live, offline, agreement = compare_with_offline(
        predictions, markers, stamps, samples=np.tile(recording.samples, (loops, 1)),
        labels=np.tile(recording.labels, loops), fs_hz=recording.fs_hz,
        package_dir=model_set.models_dir / "good", what="selected")
    assert agreement >= 0.9 and live >= offline - 0.05, (live, offline, agreement)


def test_xdf_with_an_exg_stream_loads_and_replays(tmp_path: Path, model_set: ModelSet,
                                                   lsl_outlet: Any) -> None:
    from rohde.core.datasets import load_any
    from rohde.core.errors import RecordingFormatError
    from rohde.core.xdf import XdfStream, recording_streams, write_xdf

    recording = model_set.recording
    emg, cues = recording_streams(recording, start_s=500.0)
    # A Quattrocento-style recording: ExG, int32 nV, channels numbered IN1.. in another order, then a counter
    # and a trigger; beside it an EEG headset's stream, which the loader must not take.
    perm = np.random.default_rng(4).permutation(recording.n_channels)
    values = np.concatenate([np.rint(recording.samples[:, perm].astype(np.float64) * 1000),
                             np.arange(recording.n_samples)[:, None] % 65536,
                             recording.labels[:, None]], axis=1).astype(np.int32)
    from xml.etree import ElementTree as ET

    desc = ET.Element("desc")
    channels = ET.SubElement(desc, "channels")
    for label, kind, unit in [*((f"IN{p + 1}", "ExG", "nV") for p in perm), ("Counter", "ExG", ""),
                              ("Trigger", "ExG", "")]:
        channel = ET.SubElement(channels, "channel")
        ET.SubElement(channel, "label").text = label
        ET.SubElement(channel, "type").text = kind
        ET.SubElement(channel, "unit").text = unit
    exg = XdfStream("Quattrocento", "ExG", recording.fs_hz, "int32", emg.time_stamps, values, "q400", desc)
    eeg = XdfStream("Headset", "EEG", 250.0, "float32", 500.0 + np.arange(2000) / 250.0,
                    np.zeros((2000, 8), np.float32), "eeg-1")
    path = write_xdf(tmp_path / "quattro.xdf", [eeg, exg, cues])

    loaded = load_any(path, layout="1x4x4")  # ExG before EEG; counter and trigger dropped; nV -> uV; by number
    np.testing.assert_allclose(loaded.samples, recording.samples, atol=1e-3)
    np.testing.assert_array_equal(loaded.labels, recording.labels)
    assert loaded.provenance["stream_type"] == "ExG" and "reordered" in loaded.provenance["channel_mapping"]
    headset = load_any(path, layout="1x2x4", stream_type=["eeg"])  # chosen by type, it is read instead
    assert headset.fs_hz == 250.0 and headset.provenance["stream_name"] == "Headset"
    twice = write_xdf(tmp_path / "two.xdf", [exg, dataclasses.replace(exg, name="Second", source_id="q2"), cues])
    with pytest.raises(RecordingFormatError, match=r"holds 2 candidate EMG streams \(numeric, of type ExG\): "
                                                   r"'Quattrocento'.*'Second'.*choose one by name"):
        load_any(twice, layout="1x4x4")
    assert load_any(twice, layout="1x4x4", stream_name="Second").provenance["source_id"] == "q2"

    outlet: RunningOutlet = lsl_outlet("replay", str(twice), "--stream-source-id", "q2", "--layout", "1x4x4",
                                       "--no-markers")
    (info,) = resolve(StreamQuery(source_id=outlet.source_id), timeout_s=2.0, lsl_config=LSL_CONFIG)
    reader = InletReader(info, buffer_s=2, max_chunk=500, lsl_config=LSL_CONFIG)
    try:
        reader.open(5.0)
        assert reader.description.channel_labels == tuple(recording.layout.channel_labels())
        samples, _ = reader.pull(5.0, min_samples=200)
        start = int(np.flatnonzero((loaded.samples == samples[0]).all(axis=1))[0])
        np.testing.assert_array_equal(samples[:200], loaded.samples[start : start + 200])
    finally:
        reader.close()
