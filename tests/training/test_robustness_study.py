"""The robustness study on a tiny simulated set: every variant scored per kind and severity, report written."""

from __future__ import annotations

from pathlib import Path

import pytest

from rohde.core.errors import ConfigError
from rohde.simulation.simulator import SimulatorConfig
from rohde.training.gan_models import GANConfig
from rohde.training.gan_patch_study import PatchStudyConfig
from rohde.training.robustness_study import (
    VARIANTS,
    StudyConfig,
    _recordings,
    breaking_point,
    run_study,
    write_report,
)

TINY = SimulatorConfig(fs_hz=1000.0, layout="2x4x4", gestures=("no_movement", "hand_close", "hand_open"),
                       rest_s=0.6, gesture_s=1.0, ramp_s=0.1, repetitions=1)  # fmt: skip

# 2 x 2 patches on a quarter to half of the 32 electrodes, so the 4 x 4 grids give patches of every kind.
TINY_GAN = PatchStudyConfig(copies=1, severity=(0.25, 0.5), patch_rows=2, patch_cols=2, max_patches=64,
                            gan=GANConfig.tiny())  # fmt: skip


def test_breaking_point() -> None:
    curve = {"0": {"mean": 0.95}, "0.1": {"mean": 0.85}, "0.3": {"mean": 0.7}, "0.5": {"mean": 0.4}}
    assert breaking_point(curve) == 0.3
    assert breaking_point(curve, level=0.3) is None


@pytest.mark.timeout(120)
def test_tiny_study_scores_every_variant(tmp_path: Path) -> None:
    config = StudyConfig(seeds=2, train_trials=1, severities=(0.0, 0.5), kinds=("dead", "bridge"), max_epochs=2,
                         patience=1, copies=1, simulator=TINY, gan=TINY_GAN)  # fmt: skip
    result = run_study(tmp_path, config)
    curves = result["curves"]
    assert "gan" in VARIANTS and set(curves) == {*VARIANTS, *(f"{v}+mask" for v in VARIANTS)}
    assert len(result["gan_train_s"]) == 2  # the patch GAN trained once per seed
    for variant in curves.values():
        for kind in ("dead", "bridge"):
            assert variant[kind]["0"]["n"] == 2 and variant[kind]["0.5"]["n"] == 2  # one value per seed
            assert 0.0 <= variant[kind]["0.5"]["mean"] <= 1.0
    assert curves["clean"]["dead"]["0"]["mean"] > 0.5  # three classes: well above chance when clean
    # Half the electrodes dead hurts the clean-only model more than it hurts it when clean.
    assert curves["clean"]["dead"]["0.5"]["mean"] < curves["clean"]["dead"]["0"]["mean"]
    report = write_report(result, tmp_path, docs=tmp_path / "docs" / "robustness.md")
    text = report.read_text()
    assert "bridge (held out" in text and "Reduced protocol" in text and result["seeds_done"] == 2
    assert "Against the targets" in text and "notches at 50, 60, 100" in text
    assert (tmp_path / "robustness_seen.png").is_file() and (tmp_path / "docs" / "robustness_held_out.png").is_file()


@pytest.mark.realdata
def test_the_study_takes_one_flexemg_subjects_trials_within_session(flexemg_dir: Path) -> None:
    train, val, test = _recordings(StudyConfig(flexemg=str(flexemg_dir), subject="002", train_trials=2,
                                               test_trials=3))  # fmt: skip
    assert [r.trial for r in train] + [r.trial for r in val] == sorted(r.trial for r in [*train, *val])
    assert len(train) == 2 and len(val) == 1 and len(test) == 3
    assert {r.session for r in [*train, *val]} != {r.session for r in test}  # Session1Train, then Session1Test
    assert all(r.subject.endswith("002") and r.fs_hz == 1000.0 and r.layout.n_channels == 64
               for r in [*train, *val, *test])  # fmt: skip
    with pytest.raises(ConfigError, match="asks for 10 \\+ 1"):
        _recordings(StudyConfig(flexemg=str(flexemg_dir), train_trials=10))


def test_simulated_subjects_each_give_training_validation_and_unseen_session_test_trials() -> None:
    train, val, test = _recordings(StudyConfig(simulator=TINY, sim_subjects=2, train_trials=2, test_trials=1))
    assert [(r.subject, r.session) for r in train] == [("s01", "sess1")] * 2 + [("s02", "sess1")] * 2
    assert [(r.subject, r.session) for r in val] == [("s01", "sess1"), ("s02", "sess1")]
    assert [(r.subject, r.session) for r in test] == [("s01", "sess2"), ("s02", "sess2")]
    with pytest.raises(ConfigError, match="sim_subjects"):
        _recordings(StudyConfig(simulator=TINY, sim_subjects=0))
