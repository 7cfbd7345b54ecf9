"""The amplifier in-process with real inlets: what its EMG stream declares, the end of a non-looping
source, and truth markers: each change, also on a chunk boundary, and each repeat named and stamped
at the sample where it holds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rohde.core.errors import ConfigError
from rohde.core.layouts import ElectrodeLayout, grid_layout
from rohde.core.recording import Recording
from rohde.server.amplifier import UNUSABLE_MARKER, LslAmplifier, RecordingSource
from rohde.server.lsl_inlet import import_pylsl
from rohde.server.processes import unique_id

from .conftest import LSL_CONFIG, wait_for

pytestmark = [pytest.mark.lsl, pytest.mark.timeout(60)]

FS = 1000.0


def short_recording() -> Recording:
    """0.5 s, 4 channels: gesture "a" for 300 samples, then 200 unusable samples (label -1)."""
    samples = np.arange(500 * 4, dtype=np.float32).reshape(500, 4)
    labels = np.r_[np.zeros(300), -np.ones(200)].astype(np.int16)
    return Recording(samples=samples, fs_hz=FS, layout=grid_layout(1, 2, 2), labels=labels,
                     gesture_names=("a", "b"), condition="CA")


def test_recording_source_loops_or_ends() -> None:
    recording = short_recording()
    looping = RecordingSource(recording)
    looping.read(480)
    chunk = looping.read(40)  # the last 20 samples, then the first 20 again
    np.testing.assert_array_equal(chunk.samples, np.r_[recording.samples[480:], recording.samples[:20]])
    np.testing.assert_array_equal(chunk.labels, np.r_[recording.labels[480:], recording.labels[:20]])
    assert chunk.condition == "CA" and not looping.finished
    once = RecordingSource(recording, loop=False)
    assert len(once.read(480).labels) == 480 and len(once.read(40).labels) == 20 and once.finished
    assert once.read(10).samples.shape == (0, 4)
    with pytest.raises(ConfigError, match="chunk_ms must be positive, got 0"):
        LslAmplifier(once, chunk_ms=0, lsl_config=LSL_CONFIG)


def test_stream_description_truth_markers_and_the_end_of_the_source() -> None:
    pylsl = import_pylsl(LSL_CONFIG)
    recording = short_recording()
    name = unique_id("amp")
    amp = LslAmplifier(RecordingSource(recording, loop=False), name=name, source_id=name, chunk_ms=20.0,
                       marker_repeat_s=0.1, lsl_config=LSL_CONFIG)
    inlets = {}
    for stream in (name, f"{name}-truth"):
        (info,) = wait_for(lambda s=stream: pylsl.resolve_byprop("name", s, 1, 1.0), 10)
        inlets[stream] = pylsl.StreamInlet(info)
        inlets[stream].open_stream(timeout=5)
    emg_info = inlets[name].info(timeout=5)
    desc = emg_info.desc()
    assert (emg_info.type(), emg_info.channel_count(), emg_info.nominal_srate()) == ("EMG", 4, FS)
    channel = desc.child("channels").child("channel")
    assert [channel.child_value(k) for k in ("label", "unit", "type")] == ["G1R1C1", "microvolts", "EMG"]
    assert ElectrodeLayout.from_json(desc.child_value("layout")) == recording.layout
    assert json.loads(desc.child_value("gestures")) == ["a", "b"]
    assert desc.child("acquisition").child_value("manufacturer") == "RoHDE"

    assert amp.run() == 500  # a non-looping source ends the run
    samples, stamps = inlets[name].pull_chunk(timeout=1.0, max_samples=1000)
    np.testing.assert_array_equal(np.asarray(samples, np.float32), recording.samples)
    markers, marker_stamps = inlets[f"{name}-truth"].pull_chunk(timeout=1.0)
    for inlet in inlets.values():
        inlet.close_stream()
    indices = [int(m[2]) for m in markers]
    # The truth changes to "a" at sample 0 and to unusable at 300; whichever markers repeat it between
    # (at chunk starts, where 100 samples have passed) name the truth in force at their sample.
    changes = [(m[0], i) for k, (m, i) in enumerate(zip(markers, indices, strict=True))
               if k == 0 or m[0] != markers[k - 1][0]]
    assert changes == [("a", 0), (UNUSABLE_MARKER, 300)]
    assert indices == sorted(set(indices)) and all(m[1] == "CA" for m in markers)
    assert all(m[0] == ("a" if recording.labels[i] == 0 else UNUSABLE_MARKER)
               for m, i in zip(markers, indices, strict=True))
    np.testing.assert_allclose(marker_stamps, np.asarray(stamps)[indices], atol=1e-9)  # stamp of the named sample


def test_truth_markers_mark_every_change_even_on_chunk_boundaries() -> None:
    pylsl = import_pylsl(LSL_CONFIG)
    name = unique_id("truth")
    labels = np.repeat([0, 1, 2, 3, 0], 20).astype(np.int16)  # changes every 20 samples = every chunk
    recording = Recording(samples=np.zeros((100, 4), np.float32), fs_hz=100.0, layout=grid_layout(1, 2, 2),
                          labels=labels, gesture_names=("a", "b", "c", "d"))
    amp = LslAmplifier(RecordingSource(recording, loop=False), name=name, source_id=name, chunk_ms=200.0,
                       lsl_config=LSL_CONFIG)
    (info,) = wait_for(lambda: pylsl.resolve_byprop("name", f"{name}-truth", 1, 1.0), 10)
    inlet = pylsl.StreamInlet(info)
    inlet.open_stream(timeout=5)
    amp.run(duration_s=1.0)
    markers, stamps = inlet.pull_chunk(timeout=1.0)
    changes = [m for m in markers if m[0] != "pause"]
    assert [(m[0], m[2]) for m in changes][:5] == [("a", "0"), ("b", "20"), ("c", "40"), ("d", "60"), ("a", "80")]
    assert np.allclose(np.diff(stamps[:5]), 0.2, atol=1e-6)
