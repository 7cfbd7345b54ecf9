"""The cross-day study's parts: feature-level shift augmentation, gain renormalisation, AdaBN,
head fine-tuning and the report (the study itself runs on real data with `rohde cross-day`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from rohde.core.alignment import AlignmentReference, GridShift, resampling_matrix, round_trip_matrix
from rohde.core.layouts import flexemg_layout
from rohde.core.preprocessing import PreprocessingConfig
from rohde.core.recording import Recording
from rohde.simulation.electrode_shift import ShiftRange
from rohde.training.augment import shift_augment_windows, shift_features
from rohde.training.cnn import RohdeCNN
from rohde.training.config import CNNConfig
from rohde.training.cross_day import (
    DirectionResult,
    adapt_batch_norm,
    fine_tune_head,
    read_results,
    render_markdown,
    session_gain,
    write_results,
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny heads: one thread beats two on busy cores
    yield
    torch.set_num_threads(threads)


def _model() -> RohdeCNN:
    torch.manual_seed(0)
    return RohdeCNN(layout=flexemg_layout(), n_classes=3, fs_hz=1000.0, band_hz=(20.0, 450.0),
                    config=CNNConfig(conv_channels=(4, 4), hidden=8))  # fmt: skip


def test_shift_features_moves_log_power_like_the_raw_resampling() -> None:
    layout = flexemg_layout()
    rng = np.random.default_rng(0)
    features = rng.normal(0.0, 1.0, (50, 64, 4)).astype(np.float32)
    gain_only, _ = shift_features(features, layout, shift_range=ShiftRange(max_rows=0, max_cols=0,
                                  gain_range=(2.0, 2.0)), rng=rng)  # fmt: skip
    np.testing.assert_allclose(gain_only, features + np.log(4.0), atol=1e-4)  # power x gain^2
    moved, bank = shift_features(features, layout, shift_range=ShiftRange(max_rows=3, max_cols=1, integer=True),
                                 rng=rng, n_shifts=1)  # fmt: skip
    matrix = resampling_matrix(layout, bank[0])
    expected = np.log(np.einsum("ij,njf->nif", matrix, np.exp(features.astype(np.float64)) - 1e-6) + 1e-6)
    np.testing.assert_allclose(moved, expected, atol=1e-4)
    back, bank = shift_features(features, layout, rng=rng, n_shifts=1,
                                shift_range=ShiftRange(max_rows=3, max_cols=1, integer=True, moved_back=True))
    expected = np.log(np.einsum("ij,njf->nif", round_trip_matrix(layout, bank[0]),
                                np.exp(features.astype(np.float64)) - 1e-6) + 1e-6)  # fmt: skip
    np.testing.assert_allclose(back, expected, atol=1e-4)
    assert abs(bank[0].rows) >= 1  # this seed's draw: rows left the grid and come back as the edge row's copies
    assert not np.allclose(back, features, atol=1e-3)
    x, y = shift_augment_windows(features, np.arange(50), layout, shift_range=ShiftRange(), copies=2, rng=rng)
    assert x.shape == (150, 64, 4) and np.array_equal(y, np.tile(np.arange(50), 3))
    np.testing.assert_array_equal(x[:50], features)


def test_session_gain_ignores_where_the_pattern_went() -> None:
    layout = flexemg_layout()
    rng = np.random.default_rng(1)
    amplitude = rng.uniform(5, 50, 64)
    preprocessing = PreprocessingConfig(fs_hz=1000.0, notch_hz=60.0)

    def rec(scale: np.ndarray) -> Recording:
        samples = rng.standard_normal((4000, 64)) * scale
        return Recording(samples.astype(np.float32), 1000.0, layout, np.zeros(4000, np.int16), ("rest",))

    from rohde.core.preprocessing import filter_recording

    reference = AlignmentReference.from_filtered(filter_recording(rec(amplitude).samples, preprocessing), 1000.0)
    moved = resampling_matrix(layout, GridShift(rows=4, cols=-1)) @ amplitude
    assert session_gain(reference, [rec(1.5 * rng.permutation(amplitude))], preprocessing) == pytest.approx(
        1.5, rel=0.1
    )
    assert session_gain(reference, [rec(0.7 * moved)], preprocessing) == pytest.approx(0.7, rel=0.25)


def test_adabn_changes_statistics_only_and_fine_tuning_fits_the_calibration() -> None:
    model = _model().eval()
    rng = np.random.default_rng(2)
    features = rng.normal(3.0, 2.0, (300, 64, 4)).astype(np.float32)
    adapted = adapt_batch_norm(model, features)
    assert not torch.allclose(adapted.head.norm.running_mean, model.head.norm.running_mean)
    assert torch.allclose(adapted.head.norm.weight, model.head.norm.weight)
    assert torch.allclose(adapted.head.norm.running_mean, torch.full((4,), 3.0), atol=0.2)
    labels = rng.integers(0, 3, 300)
    features[:, :8, :] += labels[:, None, None] * 2.0  # separable by a few channels
    tuned = fine_tune_head(model, (features, labels), epochs=30, lr=3e-3, seed=0)
    with torch.no_grad():
        before = (model.head(torch.from_numpy(features)).argmax(1).numpy() == labels).mean()
        after = (tuned.head(torch.from_numpy(features)).argmax(1).numpy() == labels).mean()
    assert after > 0.9 and after > before
    assert not torch.equal(tuned.head.head[2].weight, model.head.head[2].weight)  # a copy was tuned


def test_report_lists_every_method_and_round_trips(tmp_path: Path) -> None:
    shift = {"shift": {"rows": 4.5, "cols": -1.0, "rotation_deg": 0.0, "gain": 1.5}, "score": 0.97,
             "score_unshifted": -0.4}  # fmt: skip
    results = [
        DirectionResult("001", "Session1", "Session3", {"cnn/cross": 0.5, "cnn/within": 1.0}, {"features": 3.0}, shift),
        DirectionResult("001", "Session3", "Session1", {"cnn/cross": 0.7}, {"features": 2.0}, shift),
    ]
    text = render_markdown(results, command="rohde cross-day")
    assert "| CNN zero-shot | 50.0 | 70.0 | 60.0 |" in text
    assert "| CNN same placement | 100.0 |  | 100.0 |" in text
    assert "+4.50 rows" in text
    write_results(results, tmp_path, command="x")
    again, simulated = read_results(tmp_path)
    assert [r.to_dict() for r in again] == [r.to_dict() for r in results] and simulated is None
    assert (tmp_path / "cross_day.md").read_text().startswith("# Cross-day")


def test_commands_parse() -> None:
    import argparse

    from rohde.training import cross_day_commands

    parser = argparse.ArgumentParser()
    cross_day_commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["cross-day", "--data", "D", "--out", "O", "--packages", "P", "--sim-data", "S"])
    assert args.packages == Path("P") and args.sim_data == Path("S") and not args.fresh
    args = parser.parse_args(["calibrate", "--model", "M", "--data", "a.mat", "b.mat", "--out", "O", "--no-align"])
    assert args.data == [Path("a.mat"), Path("b.mat")] and args.no_align and args.epochs == 40


def test_simulated_section_names_the_choice_and_the_target(tmp_path: Path) -> None:
    import json

    from rohde.training.cross_day import SimulatedShiftResult

    keys = ("val_shifted", "val_aligned", "recorded", "shifted", "shifted_worst", "aligned", "aligned_worst")
    acc = {f"{m}/{k}": 0.9 for m in ("shipped", "finetune", "scratch") for k in keys}
    acc.update({"scratch/shifted": 0.975, "scratch/shifted_worst": 0.96, "scratch/recorded": 0.98,
                "shipped/aligned": 0.93, "shipped/aligned_worst": 0.85, "scratch/val_shifted": 0.953,
                "finetune/val_shifted": 0.95})  # fmt: skip
    estimates = {True: {"shift": {"rows": 1.25, "cols": -0.5, "rotation_deg": 0.0, "gain": 1.0}, "score": 0.95},
                 False: {"shift": {"rows": 0.0, "cols": 0.0, "rotation_deg": 0.0, "gain": 1.0},
                        "score": 0.8}}  # fmt: skip
    truth = {"rows": 1.0, "cols": -0.5, "rotation_deg": 0.0, "gain": 1.1}
    donnings = [{"split": "sess3", "subject": "s01", "donning": i, "applied": applied, "true": truth,
                 "estimate": estimates[applied]} for i, applied in enumerate((True, False))]  # fmt: skip
    chosen = {"zero-shot": "scratch", "label-free": "shipped"}
    simulated = SimulatedShiftResult(acc, {"scratch_train": 58.0}, {"train": ["t01", "t02"]}, chosen, donnings,
                                     {"scratch": [21, 31]})  # fmt: skip
    shift = {"shift": {"rows": 4.5, "cols": -1.0, "rotation_deg": 0.0, "gain": 1.5}, "score": 0.97,
             "score_unshifted": -0.4}  # fmt: skip
    results = [DirectionResult("001", "Session1", "Session3", {"robust/cross": 0.9, "cnn/within": 1.0,
                                                               "robust/within": 0.99}, {}, shift)]  # fmt: skip
    text = write_results(results, tmp_path, command="x", simulated=simulated).read_text()
    assert "| chosen on validation, zero-shot: shift-robust, head from scratch | | | 98.0 | 97.5 (96.0) | |" in text
    assert "| chosen on validation, label-free: shipped `rohde-default` | | | 90.0 | | 93.0 (85.0) |" in text
    assert ("| simulated shifts up to 2 electrodes >= 97 %, zero-shot | `scratch`, chosen on validation | 97.5 | "
            "96.0 (donning) | mean only |") in text  # fmt: skip
    assert ("| simulated shifts up to 2 electrodes >= 97 %, label-free | `shipped`, chosen on validation | 93.0 | "
            "85.0 (donning) | no |") in text  # fmt: skip
    assert "scratch 58 s (best epoch 21 of 31 run, cap 60, patience 10)" in text
    assert "Validation lead of each choice: zero-shot: `scratch` led `finetune` by 0.3 points;" in text
    assert "applied for 1 of 2 donnings (largest error of an applied estimate 0.25 sites" in text
    assert "| zero-shot >= 85 % | `robust/cross` | 90.0 | 90.0 | yes |" in text
    assert "+1.0 (as a drop)" in text
    assert read_results(tmp_path)[1] == simulated
    # A simulated section of the older protocol (no choice per method) is not carried over.
    data = json.loads((tmp_path / "results.json").read_text())
    data["simulated"] = {"accuracy": {"robust/shifted": 0.9}, "seconds": {}, "recordings": {}}
    (tmp_path / "results.json").write_text(json.dumps(data))
    assert read_results(tmp_path)[1] is None


def test_redonning_copies_give_every_head_re_donned_and_moved_back_windows(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    import rohde.training.run_context as run_context
    from rohde.training.augment import REDONNED_RANGE
    from rohde.training.config import PipelineConfig
    from rohde.training.cross_day import default_config, make_context

    assert REDONNED_RANGE.moved_back
    layout = flexemg_layout()
    rng = np.random.default_rng(0)
    recording = Recording((rng.standard_normal((3000, 64)) * 20).astype(np.float32), 1000.0, layout,
                          np.zeros(3000, np.int16), ("rest",))  # fmt: skip
    seen: list[tuple[int, int]] = []

    def record_sizes(head: object, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                     **_: object) -> None:  # fmt: skip
        seen.append((len(train[1]), len(val[1])))

    monkeypatch.setattr(run_context, "train_classifier", record_sizes)
    features = rng.normal(0.0, 1.0, (10, 64, 4)).astype(np.float32)
    for copies in (0, 2):
        config = PipelineConfig()
        config = replace(config, augment=replace(config.augment, redonning_copies=copies))
        ctx = make_context(config, [recording], tmp_path)
        ctx.fit_head("h", (features, np.arange(10)), (features[:4], np.arange(4)), key=1)
    assert seen == [(10, 4), (30, 12)]
    # The cross-day study trains its own shift augmentation: none comes from the pipeline's config.
    assert default_config(None).pipeline.augment.redonning_copies == 0
