from __future__ import annotations

import numpy as np

from rohde.core.preprocessing import Normalization, PreprocessingConfig, StreamFilter
from rohde.core.windows import StreamWindower, WindowConfig
from rohde.training.windows_dataset import (
    WindowSet,
    build_window_set,
    drop_segment_edges,
    fit_normalization,
    iter_windows,
    window_labels,
)
from tests.training.conftest import small_recordings


def test_window_label_is_last_sample_and_unusable_windows_are_invalid() -> None:
    labels = np.array([0, 0, 0, -1, 1, 1, 1, 1, 2, 2], dtype=np.int16)
    ends = np.array([3, 5, 8, 10])
    y, ok = window_labels(labels, ends, 3)
    assert y.tolist() == [0, 1, 1, 2]
    assert ok.tolist() == [True, False, True, True]


def test_drop_segment_edges_marks_both_ends() -> None:
    labels = np.array([0] * 10 + [1] * 10, dtype=np.int16)
    out = drop_segment_edges(labels, 0.2)
    assert out.tolist() == [-1, -1] + [0] * 6 + [-1, -1] * 2 + [1] * 6 + [-1, -1]


def test_offline_windows_equal_the_servers_streaming_windows() -> None:
    rec = small_recordings()[0]
    pre = PreprocessingConfig(fs_hz=rec.fs_hz)
    norm = fit_normalization([rec], pre)
    windows = WindowConfig(200.0, 50.0)
    chunks = iter_windows(rec, preprocessing=pre, normalization=norm, windows=windows)
    offline = np.concatenate([w for w, _, _ in chunks])
    stream_filter = StreamFilter(pre, rec.n_channels)
    windower = StreamWindower(rec.n_channels, windows.window_samples(rec.fs_hz), windows.hop_samples(rec.fs_hz))
    online = []
    rng = np.random.default_rng(0)
    start = 0
    while start < rec.n_samples:
        n = int(rng.integers(1, 97))  # uneven chunks, as LSL delivers them
        filtered = norm.apply(stream_filter.process(rec.samples[start : start + n]))
        online += [w for _, w in windower.push(filtered)]
        start += n
    np.testing.assert_allclose(np.stack(online), offline, rtol=0, atol=1e-5)


def test_window_set_keeps_recording_order_and_conditions() -> None:
    recs = small_recordings()[:2]
    pre = PreprocessingConfig(fs_hz=recs[0].fs_hz)
    ws = build_window_set(
        recs,
        preprocessing=pre,
        normalization=Normalization((1.0,) * recs[0].n_channels),
        windows=WindowConfig(200.0, 100.0),
        featurize=lambda x: x.mean(axis=2),
        td_features=lambda x: np.abs(x).mean(axis=2),
    )
    assert ws.features.shape == (len(ws), recs[0].n_channels)
    assert ws.td is not None and ws.td.shape == ws.features.shape
    assert set(ws.recording_ids.tolist()) == {0, 1}
    both = WindowSet.concat([ws, ws])
    assert len(both) == 2 * len(ws) and both.recording_ids.max() == 3
    assert len(ws.subset(ws.valid)) == int(ws.valid.sum())
