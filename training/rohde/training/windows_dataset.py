"""Windows and labels from Recordings, built exactly as the server builds them.

Raw `(n_samples, n_channels)` uV -> `filter_recording` (the server's `StreamFilter` from a zero
state) -> `Normalization.apply` -> `window_ends` / `extract_windows`. A window's label is the
label of its last sample; a window holding any unusable (-1) sample is marked invalid: it is
never trained or scored on, but it is still classified so majority voting sees the stream as the
server does.

Windows of 192 channels are large (~300 kB each), so they are turned into compact per-window
features chunk by chunk and never kept all at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from rohde.core.channel_repair import ChannelRepair
from rohde.core.errors import ConfigError
from rohde.core.gestures import UNUSABLE
from rohde.core.preprocessing import Normalization, PreprocessingConfig, filter_recording
from rohde.core.quality_monitor import QualityMonitor, served_repair_sets
from rohde.core.recording import Recording
from rohde.core.windows import WindowConfig, extract_windows, window_ends

logger = logging.getLogger(__name__)

Featurizer = Callable[[np.ndarray], np.ndarray]  # (n, C, W) normalised windows -> (n, ...) features


def window_labels(labels: np.ndarray, ends: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(label of each window's last sample `(N,)` int64, valid `(N,)` bool: no -1 inside the window)."""
    if len(ends) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    unusable = np.concatenate([[0], np.cumsum(labels == UNUSABLE)])  # prefix counts
    bad = unusable[ends] - unusable[ends - window]
    return labels[ends - 1].astype(np.int64), bad == 0


def drop_segment_edges(labels: np.ndarray, fraction: float) -> np.ndarray:
    """Mark the first and last `fraction` of every constant-label segment unusable (transitions)."""
    if fraction <= 0:
        return labels
    out = labels.copy()
    change = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [len(labels)]])
    for a, b in zip(starts, stops, strict=True):
        if labels[a] == UNUSABLE:
            continue
        margin = int(round(fraction * (b - a)))
        out[a : a + margin] = UNUSABLE
        out[b - margin : b] = UNUSABLE
    return out


def fit_normalization(recordings: Sequence[Recording], preprocessing: PreprocessingConfig) -> Normalization:
    """One robust scale from the filtered training recordings (usable samples only)."""
    if not recordings:
        raise ConfigError("fit_normalization needs at least one training recording.")
    parts = []
    for rec in recordings:
        filtered = filter_recording(rec.samples, preprocessing)
        keep = rec.labels != UNUSABLE
        parts.append(filtered[keep][:: max(1, int(rec.fs_hz // 100))])  # subsample: 100 rows per second
    return Normalization.fit(np.concatenate(parts, axis=0))


def iter_windows(
    recording: Recording,
    *,
    preprocessing: PreprocessingConfig,
    normalization: Normalization,
    windows: WindowConfig,
    chunk_windows: int = 128,
    rebuild_bad: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (windows `(n, C, W)` float32, labels `(n,)`, valid `(n,)`) chunk by chunk, in time order.

    With `rebuild_bad`, every window gets the channels the server's quality monitor would flag at that
    moment rebuilt from their neighbours, as the server does for a package trained with quality masking
    (`served_repair_sets`; the monitor judges with the frequencies `preprocessing` notches removed)."""
    if recording.fs_hz != preprocessing.fs_hz:
        raise ConfigError(
            f"Recording {recording.trial!r} is sampled at {recording.fs_hz} Hz but the preprocessing expects "
            f"{preprocessing.fs_hz} Hz; resample it or train a model for its rate."
        )
    window = windows.window_samples(recording.fs_hz)
    hop = windows.hop_samples(recording.fs_hz)
    normalised = normalization.apply(filter_recording(recording.samples, preprocessing))
    ends = window_ends(recording.n_samples, window, hop)
    labels, valid = window_labels(recording.labels, ends, window)
    repair, bad_sets = None, []
    if rebuild_bad:
        monitor = QualityMonitor(recording.n_channels, recording.fs_hz, layout=recording.layout,
                                 removed_hz=preprocessing.notch_frequencies())  # fmt: skip
        repair, bad_sets = ChannelRepair(recording.layout), served_repair_sets(recording.samples, ends, monitor)
    for start in range(0, len(ends), chunk_windows):
        sl = slice(start, start + chunk_windows)
        x = extract_windows(normalised, ends[sl], window)
        yield (x if repair is None else repair.rebuild_windows(x, bad_sets[sl])), labels[sl], valid[sl]


@dataclass
class WindowSet:
    """Features of every window of a list of recordings, in time order within each recording."""

    features: np.ndarray  # (N, ...) float32, from the featurizer (CNN log band powers)
    td: np.ndarray | None  # (N, 4C) float32 classic time-domain features, or None
    labels: np.ndarray  # (N,) int64 label of the window's last sample
    valid: np.ndarray  # (N,) bool, False when the window holds unusable samples
    recording_ids: np.ndarray  # (N,) int64 index into `conditions`
    conditions: list[str]  # condition of each recording

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, mask: np.ndarray) -> WindowSet:
        return WindowSet(
            features=self.features[mask],
            td=None if self.td is None else self.td[mask],
            labels=self.labels[mask],
            valid=self.valid[mask],
            recording_ids=self.recording_ids[mask],
            conditions=self.conditions,
        )

    @staticmethod
    def concat(sets: Sequence[WindowSet]) -> WindowSet:
        if not sets:
            raise ConfigError("WindowSet.concat needs at least one set.")
        offsets = np.cumsum([0] + [len(s.conditions) for s in sets])
        return WindowSet(
            features=np.concatenate([s.features for s in sets]),
            td=None if any(s.td is None for s in sets) else np.concatenate([s.td for s in sets]),  # type: ignore[misc]
            labels=np.concatenate([s.labels for s in sets]),
            valid=np.concatenate([s.valid for s in sets]),
            recording_ids=np.concatenate([s.recording_ids + o for s, o in zip(sets, offsets, strict=False)]),
            conditions=[c for s in sets for c in s.conditions],
        )


def build_window_set(
    recordings: Sequence[Recording],
    *,
    preprocessing: PreprocessingConfig,
    normalization: Normalization,
    windows: WindowConfig,
    featurize: Featurizer,
    td_features: Featurizer | None = None,
    rebuild_bad: bool = False,
) -> WindowSet:
    """Window every recording through the shared path and keep only per-window features (`rebuild_bad`: as
    `iter_windows`)."""
    feats, tds, labels, valid, ids = [], [], [], [], []
    for i, rec in enumerate(recordings):
        for x, y, ok in iter_windows(rec, preprocessing=preprocessing, normalization=normalization, windows=windows,
                                     rebuild_bad=rebuild_bad):  # fmt: skip
            feats.append(featurize(x))
            if td_features is not None:
                tds.append(td_features(x).astype(np.float32))
            labels.append(y)
            valid.append(ok)
            ids.append(np.full(len(y), i, dtype=np.int64))
    if not labels:
        raise ConfigError("No recording is long enough for one window; check window_ms and the data.")
    return WindowSet(
        features=np.concatenate(feats).astype(np.float32),
        td=np.concatenate(tds) if td_features is not None else None,
        labels=np.concatenate(labels),
        valid=np.concatenate(valid),
        recording_ids=np.concatenate(ids),
        conditions=[rec.condition for rec in recordings],
    )
