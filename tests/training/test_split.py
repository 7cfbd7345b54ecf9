"""The train / validation / seen-disturbed / test split, with and without paired test injection."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rohde.core.errors import ConfigError
from rohde.core.recording import Recording
from rohde.training.config import PipelineConfig, SplitConfig
from rohde.training.split import DataSplit, make_split
from tests.training.conftest import small_recordings


@pytest.fixture(scope="module")
def recordings() -> list[Recording]:
    return small_recordings()


def _split(recordings: list[Recording], **split: object) -> DataSplit:
    config = PipelineConfig(split=SplitConfig(train_sessions=("sess1",), **split))  # type: ignore[arg-type]
    return make_split(config, data_dir=Path("unused"), load=lambda _: recordings)


def test_sessions_split_keeps_the_test_session_apart(recordings: list[Recording]) -> None:
    split = _split(recordings)
    assert {r.session for r in split.train + split.val + split.seen_disturbed} == {"sess1"}
    assert {r.session for r in split.test} == {"sess2"}
    assert [r.trial for r in split.val] == ["t03"] and [r.trial for r in split.train] == ["t01", "t02"]
    assert sorted(r.condition for r in split.seen_disturbed) == ["CA", "LC"]
    # Without injection the disturbed tests are the recorded trials only.
    assert sorted(r.condition for r in split.test) == ["CA", "LC", "clean", "clean", "clean"]


def test_inject_test_pairs_every_clean_test_trial(recordings: list[Recording]) -> None:
    split = _split(recordings, inject_test=True)
    clean = [r for r in split.test if r.condition == "clean"]
    for condition in ("CA", "LC"):
        disturbed = [r for r in split.test if r.condition == condition]
        assert len(disturbed) == 1 + len(clean)  # the recorded trial, then one per clean test trial
        for twin, original in zip(disturbed[1:], clean, strict=True):
            assert twin.trial == original.trial
            np.testing.assert_array_equal(twin.labels, original.labels)
            assert twin.disturbance_mask is not None and twin.disturbance_mask.any()
            untouched = ~twin.disturbance_mask.any(axis=0)
            np.testing.assert_array_equal(twin.samples[:, untouched], original.samples[:, untouched])
    assert any("injected" in note for note in split.notes)


def test_split_refuses_too_few_clean_trials(recordings: list[Recording]) -> None:
    with pytest.raises(ConfigError, match="val_trials"):
        _split(recordings, val_trials=3)
    with pytest.raises(ConfigError, match="disjoint"):
        make_split(
            replace(PipelineConfig(), split=SplitConfig(train_sessions=("sess1",), test_sessions=("sess1",))),
            data_dir=Path("unused"),
            load=lambda _: recordings,
        )
