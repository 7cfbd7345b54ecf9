"""The `.rohde.npz` recording format: round trip and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rohde.core.errors import RecordingFormatError
from rohde.core.layouts import default_layout, flexemg_layout
from rohde.core.recording import Recording, load_recording


def _recording(n: int = 500) -> Recording:
    rng = np.random.default_rng(0)
    mask = np.zeros((n, 192), bool)
    mask[100:200, 150:] = True
    return Recording(
        samples=rng.normal(0, 10, (n, 192)),
        fs_hz=2048.0,
        layout=default_layout(),
        labels=np.repeat([0, -1, 3], [200, 50, n - 250]),
        gesture_names=("rest", "a", "b", "c"),
        condition="CA",
        disturbance_mask=mask,
        subject="s01",
        session="1",
        trial="2",
        provenance={"source": "unit test"},
    )


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    rec = _recording()
    path = rec.save(tmp_path / "x")
    assert path.name == "x.rohde.npz"
    back = load_recording(path)
    np.testing.assert_array_equal(back.samples, rec.samples)
    np.testing.assert_array_equal(back.labels, rec.labels)
    assert back.disturbance_mask is not None and rec.disturbance_mask is not None
    np.testing.assert_array_equal(back.disturbance_mask, rec.disturbance_mask)
    assert back.samples.dtype == np.float32 and back.labels.dtype == np.int16
    assert (back.layout, back.fs_hz, back.gesture_names, back.condition) == (
        rec.layout,
        rec.fs_hz,
        rec.gesture_names,
        rec.condition,
    )
    assert (back.subject, back.session, back.trial, back.provenance) == ("s01", "1", "2", {"source": "unit test"})


def test_inconsistent_recordings_are_refused() -> None:
    with pytest.raises(RecordingFormatError, match="layout"):
        Recording(np.zeros((10, 64)), 1000.0, default_layout(), np.zeros(10), ("rest",))
    with pytest.raises(RecordingFormatError, match="labels"):
        Recording(np.zeros((10, 64)), 1000.0, flexemg_layout(), np.zeros(9), ("rest",))
    with pytest.raises(RecordingFormatError, match="gesture names"):
        Recording(np.zeros((10, 64)), 1000.0, flexemg_layout(), np.full(10, 3), ("rest",))
    with pytest.raises(RecordingFormatError, match="disturbance_mask"):
        Recording(
            np.zeros((10, 64)), 1000.0, flexemg_layout(), np.zeros(10), ("rest",), disturbance_mask=np.zeros((10, 2))
        )


def test_unreadable_files_give_reasons(tmp_path: Path) -> None:
    with pytest.raises(RecordingFormatError, match="does not exist"):
        load_recording(tmp_path / "missing.rohde.npz")
    bad = tmp_path / "bad.rohde.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(RecordingFormatError, match="not a RoHDE recording"):
        load_recording(bad)
