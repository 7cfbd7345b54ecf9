"""`rohde data baseline`: per-subject LDA on classic features, scored per condition.

Features of 200 ms windows (hop 50 ms by default) of the shared causal filter chain: per-channel
RMS, log RMS or Hudgins' time-domain set. Within one folder, the last third of each subject's clean
trials is held out (`baseline_split`); with a training and a test folder, each subject trains on
the first and is tested on the second.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rohde.classic.features import recording_features
from rohde.classic.lda import LDA
from rohde.core.errors import ConfigError
from rohde.core.windows import WindowConfig
from rohde.data_tools.inputs import default_preprocessing, load_recording, recording_paths

logger = logging.getLogger(__name__)

FeatureKind = Literal["rms", "logrms", "td"]


@dataclass(frozen=True)
class BaselineOptions:
    window_ms: float = 200.0
    hop_ms: float = 50.0
    features: FeatureKind = "rms"
    notch: str = "auto"  # "auto" (60 Hz for flexemg, else 50 Hz), "50", "60" or "none"
    layout: str | None = None  # for XDF streams without a layout in their desc


@dataclass
class RecordingFeatures:
    subject: str
    key: tuple[str, str]  # (session, trial)
    condition: str
    X: np.ndarray  # (n_windows, n_features)
    y: np.ndarray  # (n_windows,)
    gestures: tuple[str, ...]


def features_of(paths: Sequence[Path], options: BaselineOptions) -> list[RecordingFeatures]:
    window = WindowConfig(options.window_ms, options.hop_ms)
    items = []
    for path in paths:
        rec = load_recording(path, layout=options.layout)
        preprocessing = default_preprocessing(rec, options.notch)
        X, y = recording_features(rec, preprocessing=preprocessing, window=window, kind=options.features)
        items.append(RecordingFeatures(rec.subject, (rec.session, rec.trial), rec.condition, X, y, rec.gesture_names))
        logger.debug("%s: %d windows", path, len(y))
    return items


def _score(train: list[RecordingFeatures], tests: dict[str, list[RecordingFeatures]]) -> list[dict[str, Any]]:
    X = np.concatenate([f.X for f in train])
    y = np.concatenate([f.y for f in train])
    if len(np.unique(y)) < 2:
        raise ConfigError(f"Training windows of subject {train[0].subject} hold fewer than two classes.")
    model = LDA().fit(X, y)
    rows = []
    for condition, items in tests.items():
        Xt = np.concatenate([f.X for f in items])
        yt = np.concatenate([f.y for f in items])
        if len(yt) == 0:
            continue
        rows.append(
            {
                "subject": train[0].subject,
                "train_recordings": len(train),
                "train_windows": int(len(y)),
                "condition": condition,
                "test_recordings": len(items),
                "test_windows": int(len(yt)),
                "accuracy": model.score(Xt, yt),
            }
        )
    return rows


def _natural_key(key: tuple[str, str]) -> tuple[tuple[int, int | str], ...]:
    """Sort `('sess2', '10')` after `('sess2', '9')`: numeric parts compare as numbers."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in key)


def baseline_split(items: list[RecordingFeatures]) -> tuple[list[RecordingFeatures], list[RecordingFeatures]]:
    """Per subject: the last third (at least one) of clean (session, trial) keys is held out.

    Every recording of a held-out key is a test recording, whatever its condition; disturbed
    recordings of training keys are left out too, since they share the training trial's EMG.
    """
    clean_keys = sorted({f.key for f in items if f.condition == "clean"}, key=_natural_key)
    if len(clean_keys) < 2:
        raise ConfigError(
            f"Subject {items[0].subject} has {len(clean_keys)} clean trial(s); the baseline needs at least two."
        )
    n_test = max(1, len(clean_keys) // 3)
    train_keys = set(clean_keys[:-n_test])
    train = [f for f in items if f.key in train_keys and f.condition == "clean"]
    test = [f for f in items if f.key not in train_keys]
    return train, test


def _by_condition(items: list[RecordingFeatures]) -> dict[str, list[RecordingFeatures]]:
    grouped: dict[str, list[RecordingFeatures]] = defaultdict(list)
    for f in items:
        grouped[f.condition].append(f)
    order = {c: i for i, c in enumerate(("clean", "CA", "LC"))}
    return dict(sorted(grouped.items(), key=lambda kv: (order.get(kv[0], 99), kv[0])))


def _by_subject(items: list[RecordingFeatures]) -> dict[str, list[RecordingFeatures]]:
    grouped: dict[str, list[RecordingFeatures]] = defaultdict(list)
    for f in items:
        grouped[f.subject].append(f)
    return grouped


def baseline_within(data_dir: Path, options: BaselineOptions) -> list[dict[str, Any]]:
    """Result rows (one per subject and test condition), trained and tested on held-out trials of one folder."""
    per_subject = _by_subject(features_of(recording_paths(data_dir), options))
    rows: list[dict[str, Any]] = []
    for subject in sorted(per_subject):
        train, test = baseline_split(per_subject[subject])
        rows.extend(_score(train, _by_condition(test)))
    return rows


def baseline_across(train_dir: Path, test_dir: Path, options: BaselineOptions) -> list[dict[str, Any]]:
    """Result rows (one per subject and test condition), trained on one folder and tested on another."""
    train_by = _by_subject(features_of(recording_paths(train_dir), options))
    test_by = _by_subject(features_of(recording_paths(test_dir), options))
    common = sorted(set(train_by) & set(test_by))
    if not common:
        raise ConfigError(f"No subject appears in both --train ({sorted(train_by)}) and --test ({sorted(test_by)}).")
    rows: list[dict[str, Any]] = []
    for subject in common:
        rows.extend(_score(train_by[subject], _by_condition(test_by[subject])))
    return rows


def format_baseline(rows: list[dict[str, Any]]) -> str:
    """The result rows as a table, with the mean per condition over subjects when there are several rows."""
    header = f"{'subject':<10}{'condition':<11}{'train win':>10}{'test rec':>9}{'test win':>10}{'accuracy':>10}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['subject']:<10}{r['condition']:<11}{r['train_windows']:>10}{r['test_recordings']:>9}"
            f"{r['test_windows']:>10}{100 * r['accuracy']:>9.2f}%"
        )
    by_condition: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        by_condition[r["condition"]].append(r["accuracy"])
    if len(rows) > 1:
        lines.append("-" * len(header))
        for condition, accs in by_condition.items():
            lines.append(f"{'mean':<10}{condition:<11}{'':>29}{100 * float(np.mean(accs)):>9.2f}%")
    return "\n".join(lines)
