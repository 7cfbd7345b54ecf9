"""Loaders: flexemg trials (README timeline), XDF round trips, dispatch and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rohde.core.datasets import (
    cue_labels,
    find_recordings,
    flexemg_labels,
    load_any,
    load_dataset,
    load_flexemg_trial,
    load_xdf_recording,
)
from rohde.core.errors import LayoutError, RecordingFormatError
from rohde.core.gestures import DEFAULT_GESTURES
from rohde.core.layouts import default_layout, grid_layout
from rohde.core.recording import Recording
from rohde.core.xdf import XdfStream, check_xdf, emg_desc, write_recording_xdf, write_xdf

FS_HZ = 512.0
T0_S = 1000.0  # LSL clocks start far from zero


def _emg(n_samples: int, n_channels: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    samples = rng.normal(0.0, 20.0, (n_samples, n_channels)).astype(np.float32)
    stamps = T0_S + np.arange(n_samples) / FS_HZ
    return samples, stamps


def _markers(cues: list[tuple[float, str]]) -> XdfStream:
    return XdfStream(
        name="cues",
        type="Markers",
        nominal_srate=0.0,
        channel_format="string",
        time_stamps=np.array([T0_S + t for t, _ in cues]),
        time_series=[[name] for _, name in cues],
        source_id="cues-1",
    )


# ------------------------------------------------------------------------------------- flexemg


def test_flexemg_labels_follow_the_readme_rule() -> None:
    labels = flexemg_labels(28000, [3, 4, 2, 1], timerest=5000, timegest=5000, twidth=0.2)
    # rest [1000, 4000), then each gesture keeps the middle 3000 of its 5000 samples.
    assert (labels[1000:4000] == 0).all() and (labels[:1000] == -1).all()
    assert (labels[4000:6000] == -1).all()
    for i, gesture in enumerate([3, 4, 2, 1]):
        start = 5000 + i * 5000
        assert (labels[start + 1000 : start + 4000] == gesture).all()
    assert (labels[24000:] == -1).all()  # margin of the last transition, then the last 3000 samples
    assert {int(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True), strict=True)} == {
        -1: 13000, 0: 3000, 1: 3000, 2: 3000, 3: 3000, 4: 3000,
    }  # fmt: skip


@pytest.mark.realdata
def test_flexemg_trial_counts_match_readme_timeline(flexemg_dir: Path) -> None:
    rec = load_flexemg_trial(flexemg_dir / "data" / "001-Session1Train" / "001-001.mat")
    assert rec.gesture_names == ("rest", "fist", "raise", "lower", "open")
    assert (rec.n_samples, rec.n_channels, rec.fs_hz) == (28000, 64, 1000.0)
    assert rec.layout.name == "flexemg16x4"
    assert (rec.subject, rec.session, rec.trial) == ("001", "Session1Train", "001")
    counts = {
        rec.gesture_names[k] if k >= 0 else "unusable": int(v)
        for k, v in zip(*np.unique(rec.labels, return_counts=True), strict=True)
    }
    assert counts == {"unusable": 13000, "rest": 3000, "fist": 3000, "raise": 3000, "lower": 3000, "open": 3000}
    # Sequence [3, 4, 2, 1]: lower is performed first, from sample 5000.
    assert rec.provenance["sequence"] == [3, 4, 2, 1]
    assert (rec.labels[6000:9000] == 3).all()
    # Counts -> uV: mean removed per channel; EMG of a forearm is tens to hundreds of uV.
    assert np.allclose(rec.samples.mean(axis=0), 0.0, atol=1e-2)
    assert 5.0 < float(np.median(np.std(rec.samples, axis=0))) < 5000.0


@pytest.mark.realdata
def test_flexemg_folder_is_found_without_the_arraymap(flexemg_dir: Path) -> None:
    paths = find_recordings(flexemg_dir)
    assert len(paths) == 100
    assert all(p.suffix == ".mat" and p.name != "arraymap.mat" for p in paths)


def test_not_a_flexemg_mat_file_is_refused(tmp_path: Path) -> None:
    from scipy.io import savemat

    savemat(tmp_path / "other.mat", {"x": np.zeros(3)})
    with pytest.raises(RecordingFormatError, match="flexemg"):
        load_any(tmp_path / "other.mat")
    (tmp_path / "garbage.mat").write_bytes(b"\x00\x01not matlab at all" * 10)
    with pytest.raises(RecordingFormatError):
        load_any(tmp_path / "garbage.mat")


# ------------------------------------------------------------------------------------------ XDF


def test_xdf_round_trip_with_layout_in_desc(tmp_path: Path) -> None:
    layout = grid_layout(2, 4, 4, order="row", name="2x4x4-row")
    samples, stamps = _emg(3 * int(FS_HZ), layout.n_channels)
    emg = XdfStream(
        name="amp", type="EMG", nominal_srate=FS_HZ, channel_format="float32", time_stamps=stamps,
        time_series=samples, source_id="amp-1", desc=emg_desc(layout, condition="CA"),
    )  # fmt: skip
    cues = _markers([(0.5, "hand_close"), (1.5, "pause"), (2.0, "no_movement")])
    path = write_xdf(tmp_path / "rec.xdf", [emg, cues])
    tags = [tag for tag, _ in check_xdf(path)]
    assert tags[0] == 1 and tags.count(2) == 2 and tags.count(6) == 2 and 3 in tags

    rec = load_any(path, dejitter=False)
    assert rec.layout == layout  # the explicit map travels, not a guess from the channel count
    assert rec.fs_hz == FS_HZ and rec.condition == "CA"
    np.testing.assert_array_equal(rec.samples, samples)
    assert rec.gesture_names == DEFAULT_GESTURES
    close, rest = DEFAULT_GESTURES.index("hand_close"), DEFAULT_GESTURES.index("no_movement")
    n = int(FS_HZ)
    assert (rec.labels[: n // 2] == -1).all()  # before the first cue
    assert (rec.labels[n // 2 : 3 * n // 2] == close).all()
    assert (rec.labels[3 * n // 2 : 2 * n] == -1).all()  # 'pause' names no gesture
    assert (rec.labels[2 * n :] == rest).all()
    assert rec.provenance["source_id"] == "amp-1"

    # pyxdf's jitter removal (the default) leaves regular stamps as they are, to rounding.
    np.testing.assert_array_equal(load_any(path).labels, rec.labels)


def test_xdf_without_desc_uses_channel_count_or_given_layout(tmp_path: Path) -> None:
    samples, stamps = _emg(600, 192)
    emg = XdfStream("amp", "EMG", FS_HZ, "float32", stamps, samples)
    cues = _markers([(0.0, "fist"), (0.5, "open")])
    path = write_xdf(tmp_path / "plain.xdf", [cues, emg])  # the EMG stream need not come first
    rec = load_xdf_recording(path)
    assert rec.layout == default_layout()
    assert rec.gesture_names == ("fist", "open")  # cues in order of first appearance
    assert set(np.unique(rec.labels).tolist()) <= {0, 1}

    odd_samples, odd_stamps = _emg(300, 32)
    odd = write_xdf(tmp_path / "odd.xdf", [XdfStream("amp", "EMG", FS_HZ, "float32", odd_stamps, odd_samples)])
    with pytest.raises(LayoutError, match="layout"):
        load_any(odd)
    rec = load_any(odd, layout="2x4x4", gesture_names=["a", "b"])
    assert rec.layout.n_channels == 32 and (rec.labels == -1).all()
    with pytest.raises(LayoutError):
        load_any(odd, layout="3x8x8")


def test_xdf_gestures_from_desc_and_int_streams(tmp_path: Path) -> None:
    layout = grid_layout(1, 2, 2)
    stamps = T0_S + np.arange(100) / FS_HZ
    values = np.arange(400, dtype=np.int16).reshape(100, 4)
    emg = XdfStream("amp", "EMG", FS_HZ, "int16", stamps, values, desc=emg_desc(layout, gesture_names=["up", "down"]))
    path = write_xdf(tmp_path / "int.xdf", [emg, _markers([(0.0, "down")])])
    rec = load_any(path)
    assert rec.gesture_names == ("up", "down")
    np.testing.assert_array_equal(rec.samples, values.astype(np.float32))
    assert (rec.labels == 1).all()


def test_cue_labels_take_the_latest_cue() -> None:
    labels = cue_labels(np.array([0.0, 1.0, 2.0, 3.0]), np.array([2.0, 1.0]), ["b", "a"], ["a", "b"])
    np.testing.assert_array_equal(labels, [-1, 0, 1, 1])
    # Half a sample of tolerance: a cue stamped just after a sample still starts at that sample.
    labels = cue_labels(np.array([0.0, 1.0, 2.0]), np.array([0.9999]), ["a"], ["a"], tolerance_s=0.5)
    np.testing.assert_array_equal(labels, [-1, 0, 0])


def test_xdf_without_emg_stream_is_refused(tmp_path: Path) -> None:
    path = write_xdf(tmp_path / "markers.xdf", [_markers([(0.0, "fist")])])
    with pytest.raises(RecordingFormatError, match="EMG"):
        load_any(path)


def test_corrupt_xdf_files_are_refused(tmp_path: Path) -> None:
    samples, stamps = _emg(2000, 8)
    emg = XdfStream("amp", "EMG", FS_HZ, "float32", stamps, samples, desc=emg_desc(grid_layout(1, 2, 4)))
    good = write_xdf(tmp_path / "good.xdf", [emg]).read_bytes()
    (tmp_path / "truncated.xdf").write_bytes(good[: len(good) // 2])
    with pytest.raises(RecordingFormatError, match="truncated"):
        load_any(tmp_path / "truncated.xdf")
    (tmp_path / "magic.xdf").write_bytes(b"XYZ:" + good[4:])
    with pytest.raises(RecordingFormatError, match="XDF:"):
        load_any(tmp_path / "magic.xdf")
    (tmp_path / "empty.xdf").write_bytes(b"")
    with pytest.raises(RecordingFormatError):
        load_any(tmp_path / "empty.xdf")


# ------------------------------------------------------------------------------------ dispatch


def _small_recording(condition: str = "clean") -> Recording:
    layout = grid_layout(1, 2, 2)
    return Recording(
        samples=np.zeros((50, 4)), fs_hz=100.0, layout=layout, labels=np.zeros(50), gesture_names=("rest", "fist"),
        condition=condition,
    )  # fmt: skip


def test_find_and_load_a_folder_recursively(tmp_path: Path) -> None:
    _small_recording().save(tmp_path / "a" / "one")
    _small_recording("CA").save(tmp_path / "b" / "c" / "two")
    (tmp_path / "dataset.json").write_text(json.dumps({"note": "not a recording"}))
    (tmp_path / "notes.txt").write_text("ignored")
    paths = find_recordings(tmp_path)
    assert [p.name for p in paths] == ["one.rohde.npz", "two.rohde.npz"]
    assert [r.condition for r in load_dataset(tmp_path)] == ["clean", "CA"]
    assert find_recordings(paths[0]) == [paths[0]]


def test_unsupported_and_missing_inputs_give_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("1,2,3\n")
    with pytest.raises(RecordingFormatError, match="Unsupported"):
        load_any(tmp_path / "data.csv")
    with pytest.raises(RecordingFormatError, match="Unsupported"):
        find_recordings(tmp_path / "data.csv")
    with pytest.raises(RecordingFormatError, match="not a file"):
        load_any(tmp_path / "missing.rohde.npz")
    with pytest.raises(RecordingFormatError, match="neither"):
        find_recordings(tmp_path / "missing")
    with pytest.raises(RecordingFormatError, match="No recordings"):
        load_dataset(tmp_path)
    (tmp_path / "bad.rohde.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(RecordingFormatError):
        load_any(tmp_path / "bad.rohde.npz")
    path = _small_recording().save(tmp_path / "ok")
    with pytest.raises(RecordingFormatError, match="do not apply"):
        load_any(path, layout="3x8x8")


def test_recording_round_trips_through_xdf(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    labels = np.repeat([-1, 0, 2, -1, 1, 0], 150).astype(np.int16)
    rec = Recording(
        samples=rng.normal(0, 30, (900, 192)),
        fs_hz=2048.0,
        layout=default_layout(),
        labels=labels,
        gesture_names=DEFAULT_GESTURES[:3],
        condition="LC",
        subject="s02",
    )
    path = write_recording_xdf(rec, tmp_path / "rec.xdf", start_s=12345.678)
    back = load_any(path, subject="s02")
    np.testing.assert_array_equal(back.samples, rec.samples)
    np.testing.assert_array_equal(back.labels, rec.labels)
    assert back.layout == rec.layout and back.gesture_names == rec.gesture_names
    assert (back.condition, back.subject, back.fs_hz) == ("LC", "s02", 2048.0)


def test_bids_names_give_subject_session_and_run(tmp_path: Path) -> None:
    samples, stamps = _emg(100, 64)
    folder = tmp_path / "sub-P003" / "ses-S002" / "emg"
    path = write_xdf(folder / "sub-P003_ses-S002_task-Default_run-004_emg.xdf", [
        XdfStream("amp", "EMG", FS_HZ, "float32", stamps, samples), _markers([(0.0, "hand_open")]),
    ])  # fmt: skip
    rec = load_any(path)
    assert (rec.subject, rec.session, rec.trial) == ("P003", "S002", "004")
    assert rec.layout.name == "flexemg16x4"  # 64 channels without a desc layout


def test_two_channel_cues_carry_the_condition(tmp_path: Path) -> None:
    """The amplifier's truth stream: [gesture, condition] per cue, 'pause' naming no gesture."""
    samples, stamps = _emg(1000, 192)
    cues = XdfStream(
        "truth", "Markers", 0.0, "string", np.array([T0_S, T0_S + 0.5, T0_S + 1.0]),
        [["hand_open", "CA"], ["pause", "CA"], ["hand_open", "CA"]],
    )  # fmt: skip
    path = write_xdf(tmp_path / "amp.xdf", [XdfStream("amp", "EMG", FS_HZ, "float32", stamps, samples), cues])
    rec = load_any(path)
    assert rec.condition == "CA" and rec.gesture_names == DEFAULT_GESTURES
    open_index = DEFAULT_GESTURES.index("hand_open")
    assert (rec.labels[:256] == open_index).all() and (rec.labels[256:512] == -1).all()
