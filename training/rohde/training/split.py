"""The training run's data split: clean training, validation, seen-disturbed and test recordings.

Splits (never selected on test data):
- "sessions" mode (simulated data sets): the first session (or `split.train_sessions`) is for
  training; per subject its last `val_trials` clean trials are the validation set for model
  selection and early stopping, the other clean trials are training data, and the first
  `disturbed_trials` CA and LC trials per subject are the only real disturbed data the GAN and
  baseline (b) see. Every other session is test data only. Subjects are pooled: one model serves
  every user of the shipped package, as `rohde serve` runs one model.
- "folders" mode (flexemg): `split.train_dirs` hold the training session, `split.test_dirs` the
  test session. Where a condition has no real recording, the disturbance models inject it
  (`inject_missing`), into training trials for the "seen" disturbed set and into every test trial.
- "repetitions" mode (a user's calibration recordings, `rohde record`): every hold of a gesture is
  one repetition (the k-th hold of a gesture in a recording is its repetition k) and owns the samples
  from its start to the next hold's start (its rest, the next announcement). Per recording, the last
  repetition of each gesture is test data and the one before it validation data, every earlier one
  training data; with `split.test_paths`, those recordings are the test data and the last repetition
  of each training recording validates. A recording therefore needs 3 holds per gesture (2 with test
  recordings). The first `settle_ms` of every cued segment is unusable (the user reacting to the cue),
  tapped (disturbed) stretches are kept out of the clean sets, and CA and LC are injected with the
  disturbance models for the GAN and for the disturbed tests.
- `split.inject_test` also injects each condition into every clean test trial where recorded
  disturbed trials exist: each disturbed test then holds the very EMG of the clean test, so the
  drop from clean to disturbed is the cost of the disturbance alone, not of which holds the few
  disturbed trials happen to contain.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rohde.core.errors import ConfigError
from rohde.core.gestures import REST_GESTURES, UNUSABLE
from rohde.core.recording import Recording
from rohde.training import augment
from rohde.training.config import PipelineConfig
from rohde.training.windows_dataset import drop_segment_edges


def recording_id(rec: Recording) -> str:
    return f"{rec.subject}/{rec.session}/{rec.trial}/{rec.condition}"


def recording_key(rec: Recording) -> int:
    """A stable integer per recording (Python's str hash changes between processes)."""
    return zlib.crc32(recording_id(rec).encode())


@dataclass
class DataSplit:
    train: list[Recording]  # clean training trials
    val: list[Recording]  # clean validation trials (model selection)
    seen_disturbed: list[Recording]  # the few real disturbed trials the GAN and baseline (b) see
    test: list[Recording]  # test trials of every condition
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "train": [recording_id(r) for r in self.train],
            "val": [recording_id(r) for r in self.val],
            "seen_disturbed": [recording_id(r) for r in self.seen_disturbed],
            "test": [recording_id(r) for r in self.test],
            "notes": self.notes,
        }


def _check_compatible(recordings: Sequence[Recording]) -> None:
    first = recordings[0]
    for rec in recordings[1:]:
        if rec.fs_hz != first.fs_hz or rec.layout != first.layout or rec.gesture_names != first.gesture_names:
            raise ConfigError(
                f"Recording {recording_id(rec)} differs from {recording_id(first)} in rate, layout or gestures; "
                "train one model per set-up."
            )


def _inject(rec: Recording, condition: str, seed: int) -> Recording:
    return augment.oracle_augment(rec, condition, seed=seed)


def _pools(
    config: PipelineConfig, data_dir: Path, load: Callable[[Path], list[Recording]]
) -> tuple[list[Recording], list[Recording], list[str]]:
    """(training pool, test pool, notes) by the split mode, before the per-subject rules."""
    split = config.split
    if split.mode == "folders":
        train_pool = [r for d in split.train_dirs for r in load(data_dir / d)]
        test_pool = [r for d in split.test_dirs for r in load(data_dir / d)]
        return train_pool, test_pool, []
    everything = load(data_dir)
    sessions = sorted({r.session for r in everything})
    train_sessions = list(split.train_sessions) or sessions[:1]
    test_sessions = list(split.test_sessions) or [s for s in sessions if s not in train_sessions]
    missing = (set(train_sessions) | set(test_sessions)) - set(sessions)
    if missing:
        raise ConfigError(f"Sessions {sorted(missing)} are not in {str(data_dir)!r} (it has {sessions}).")
    if not test_sessions or set(train_sessions) & set(test_sessions):
        raise ConfigError(
            f"Need disjoint, non-empty train and test sessions; got {train_sessions} and {test_sessions}."
        )
    train_pool = [r for r in everything if r.session in train_sessions]
    test_pool = [r for r in everything if r.session in test_sessions]
    return train_pool, test_pool, [f"train sessions {train_sessions}, test sessions {test_sessions}"]


def make_split(
    config: PipelineConfig,
    *,
    data_dir: Path,
    load: Callable[[Path], list[Recording]],
) -> DataSplit:
    """Apply the split rules of the module docstring to the recordings under `data_dir`."""
    split = config.split
    conditions = config.augment.conditions
    if split.mode == "repetitions":
        return _repetition_split(config, data_dir=data_dir, load=load)
    train_pool, test_pool, notes = _pools(config, data_dir, load)
    if not train_pool or not test_pool:
        raise ConfigError(f"No training or no test recordings found under {str(data_dir)!r}.")
    _check_compatible(train_pool + test_pool)
    if split.drop_edge_fraction > 0:
        train_pool = [replace(r, labels=drop_segment_edges(r.labels, split.drop_edge_fraction)) for r in train_pool]
        test_pool = [replace(r, labels=drop_segment_edges(r.labels, split.drop_edge_fraction)) for r in test_pool]

    train, val, seen, test = [], [], [], []
    for subject in sorted({r.subject for r in train_pool}):
        mine = sorted((r for r in train_pool if r.subject == subject), key=lambda r: (r.session, r.trial))
        clean = [r for r in mine if r.condition == "clean"]
        if len(clean) <= split.val_trials:
            raise ConfigError(
                f"Subject {subject} has {len(clean)} clean training trials; need more than split.val_trials="
                f"{split.val_trials}."
            )
        train += clean[: -split.val_trials]
        val += clean[-split.val_trials :]
        for k, condition in enumerate(conditions):
            real = [r for r in mine if r.condition == condition][: split.disturbed_trials]
            if not real and split.inject_missing:
                real = [_inject(r, condition, seed=config.seed * 1000 + 17 * k + i)
                        for i, r in enumerate(clean[: split.disturbed_trials])]  # fmt: skip
                notes.append(f"subject {subject}: no real {condition} training trial; injected into "
                             f"{len(real)} clean training trial(s) with the disturbance model")  # fmt: skip
            if not real:
                raise ConfigError(f"Subject {subject} has no {condition} training trial and inject_missing is off.")
            seen += real
    for subject in sorted({r.subject for r in test_pool}):
        mine = sorted((r for r in test_pool if r.subject == subject), key=lambda r: (r.session, r.trial))
        clean = [r for r in mine if r.condition == "clean"]
        test += clean
        for k, condition in enumerate(conditions):
            real = [r for r in mine if r.condition == condition]
            test += real
            if split.inject_test or (not real and split.inject_missing):
                test += [_inject(r, condition, seed=config.seed * 1000 + 500 + 17 * k + i) for i, r in enumerate(clean)]
                notes.append(
                    f"subject {subject}: test {condition} = {len(real)} recorded trial(s) + {len(clean)} clean test "
                    "trial(s) with it injected"
                )
    return DataSplit(train=train, val=val, seen_disturbed=seen, test=test, notes=notes)


# ------------------------------------------------------------------------------------ repetitions

ROLES = ("train", "val", "test")
_WARMUP_S = 1.0  # unlabelled lead kept before a cropped part, so the filter settles before its first window


def settle_labels(labels: np.ndarray, settle_samples: int) -> np.ndarray:
    """The first `settle_samples` of every labelled segment made unusable (a reaction after each cue)."""
    if settle_samples <= 0:
        return labels
    out = labels.copy()
    starts = np.concatenate([[0], np.flatnonzero(np.diff(labels)) + 1])
    for start in starts:
        if labels[start] != UNUSABLE:
            out[start : start + settle_samples] = UNUSABLE
    return out


def hold_repetitions(labels: np.ndarray, gesture_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the gesture `(n,)` and repetition `(n,)` (1-based) of the latest hold started at or before
    it; -1 and 0 before the first hold. A hold is a segment of one non-rest gesture label."""
    rest = {i for i, name in enumerate(gesture_names) if name.lower() in REST_GESTURES}
    gesture = np.full(len(labels), -1, dtype=np.int64)
    repetition = np.zeros(len(labels), dtype=np.int64)
    counts: dict[int, int] = {}
    starts = np.concatenate([[0], np.flatnonzero(np.diff(labels)) + 1]) if len(labels) else np.zeros(0, int)
    for start in starts:
        label = int(labels[start])
        if label == UNUSABLE or label in rest:
            continue
        counts[label] = counts.get(label, 0) + 1
        gesture[start:] = label
        repetition[start:] = counts[label]
    return gesture, repetition


def _role_part(rec: Recording, keep: np.ndarray, role: str) -> Recording | None:
    """`rec` with only the `keep` samples labelled, cropped to them (plus a filter warm-up); None if none."""
    labels = np.where(keep, rec.labels, UNUSABLE).astype(np.int16)
    used = np.flatnonzero(labels != UNUSABLE)
    if not len(used):
        return None
    start = max(0, int(used[0]) - int(_WARMUP_S * rec.fs_hz))
    stop = int(used[-1]) + 1
    mask = None if rec.disturbance_mask is None else rec.disturbance_mask[start:stop]
    return replace(rec, samples=rec.samples[start:stop], labels=labels[start:stop], disturbance_mask=mask,
                   trial=f"{rec.trial}-{role}")


def repetition_parts(rec: Recording, *, settle_ms: float, test_here: bool) -> dict[str, Recording]:
    """A recording's train, validation and test parts by repetition (module docstring)."""
    labels = settle_labels(rec.labels, int(round(settle_ms * rec.fs_hz / 1000.0)))
    if rec.disturbance_mask is not None:
        labels = np.where(rec.disturbance_mask.any(axis=1), UNUSABLE, labels).astype(np.int16)
    gesture, repetition = hold_repetitions(rec.labels, rec.gesture_names)
    needed = 3 if test_here else 2
    found = {int(g): int(repetition[gesture == g].max()) for g in np.unique(gesture) if g >= 0}
    short = {rec.gesture_names[g]: n for g, n in found.items() if n < needed}
    if not found or short:
        roles = "train, validation, test" if test_here else "train, validation"
        raise ConfigError(
            f"Recording {recording_id(rec)} holds {short or 'no gesture'} fewer than {needed} times; the split by "
            f"repetition needs {needed} holds per gesture ({roles}). Record more --repetitions, or give test "
            "recordings with --test."
        )
    last_of = np.zeros(len(rec.gesture_names) + 1, dtype=np.int64)  # index -1 (no hold yet) reads the extra 0
    for g, n in found.items():
        last_of[g] = n
    last = last_of[gesture]
    role = np.full(len(labels), "train", dtype=object)
    if test_here:
        role[(gesture >= 0) & (repetition == last)] = "test"
        role[(gesture >= 0) & (repetition == last - 1)] = "val"
    else:
        role[(gesture >= 0) & (repetition == last)] = "val"
    keep_labels = replace(rec, labels=labels)
    parts = {r: _role_part(keep_labels, role == r, r) for r in ROLES}
    return {r: part for r, part in parts.items() if part is not None}


def _repetition_split(config: PipelineConfig, *, data_dir: Path, load: Callable[[Path], list[Recording]]) -> DataSplit:
    split = config.split
    train_pool = [r for p in split.train_paths for r in load(data_dir / p)]
    test_pool = [r for p in split.test_paths for r in load(data_dir / p)]
    if not train_pool:
        raise ConfigError(f"No recordings found in {list(split.train_paths)}.")
    _check_compatible(train_pool + test_pool)
    train, val, test = [], [], []
    tested = (f"test recordings {list(split.test_paths)}" if test_pool
              else "the last hold of each gesture in each recording tests, the one before validates")
    notes = [f"split by repetition: {tested}; the first {split.settle_ms:g} ms after each cue are not used"]
    for rec in train_pool:
        parts = repetition_parts(rec, settle_ms=split.settle_ms, test_here=not test_pool)
        train.append(parts["train"])
        val += [parts["val"]] if "val" in parts else []
        test += [parts["test"]] if "test" in parts else []
        if rec.disturbance_mask is not None and rec.disturbance_mask.any():
            notes.append(f"{recording_id(rec)}: {rec.disturbance_mask.any(axis=1).sum() / rec.fs_hz:.1f} s of tapped "
                         "(disturbed) holds are kept out of the clean sets")
    for rec in test_pool:
        labels = settle_labels(rec.labels, int(round(split.settle_ms * rec.fs_hz / 1000.0)))
        test.append(replace(rec, labels=labels, condition="clean" if rec.disturbance_mask is None
                            or not rec.disturbance_mask.any() else rec.condition))
    clean_test = [r for r in test if r.condition == "clean"]
    seen, injected = [], []
    for k, condition in enumerate(config.augment.conditions):
        seen += [_inject(r, condition, seed=config.seed * 1000 + 17 * k + i)
                 for i, r in enumerate(train[: split.disturbed_trials])]  # fmt: skip
        injected += [_inject(r, condition, seed=config.seed * 1000 + 500 + 17 * k + i)
                     for i, r in enumerate(clean_test)]  # fmt: skip
        notes.append(f"{condition}: injected with the disturbance model into {min(len(train), split.disturbed_trials)} "
                     f"training part(s) (GAN) and {len(clean_test)} test part(s)")
    return DataSplit(train=train, val=val, seen_disturbed=seen, test=test + injected, notes=notes)
