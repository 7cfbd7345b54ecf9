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

from rohde.core.errors import ConfigError
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
