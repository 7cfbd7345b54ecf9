"""`rohde calibrate`: a package rebuilt from ONNX, aligned label-free and fine-tuned, re-exported."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from rohde.cli import main
from rohde.core.alignment import GridShift
from rohde.core.errors import ConfigError, ModelPackageError
from rohde.core.layouts import flexemg_layout
from rohde.core.model_package import load_model_package, write_metadata
from rohde.core.preprocessing import PreprocessingConfig
from rohde.core.recording import Recording
from rohde.core.windows import WindowConfig
from rohde.simulation.electrode_shift import shift_recording
from rohde.training.calibrate import (
    calibrate_package,
    model_from_package,
    training_recordings,
    with_alignment_reference,
)
from rohde.training.cnn import RohdeCNN
from rohde.training.config import CNNConfig, TrainerConfig
from rohde.training.export import export_package
from rohde.training.split import recording_id
from rohde.training.trainer import train_classifier
from rohde.training.windows_dataset import build_window_set, fit_normalization

FS_HZ = 1000.0
GESTURES = ("rest", "a", "b", "c")
CENTRES = {1: (3.0, 1.0), 2: (8.0, 2.5), 3: (12.0, 0.5)}  # (row, col) of each gesture's activity


def _recording(seed: int, repetitions: int = 2, hold_s: float = 2.0) -> Recording:
    """Noise whose amplitude map is a blob per gesture on the 16 x 4 array (rest: a low floor)."""
    layout = flexemg_layout()
    rng = np.random.default_rng(seed)
    hold = int(hold_s * FS_HZ)
    labels = np.repeat(np.tile(np.arange(len(GESTURES)), repetitions), hold).astype(np.int16)
    amplitude = np.full((len(GESTURES), layout.n_channels), 3.0)
    for g, (r0, c0) in CENTRES.items():
        for e in layout.channel_map():
            amplitude[g, e["channel"]] += 40.0 * np.exp(-((e["row"] - r0) ** 2 + (e["col"] - c0) ** 2) / 4.0)
    samples = rng.standard_normal((len(labels), layout.n_channels)) * amplitude[labels]
    labels[:200] = -1  # the filter's start-up
    return Recording(samples.astype(np.float32), FS_HZ, layout, labels, GESTURES, session="s1", trial=str(seed))


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny heads: one thread beats two on busy cores (8x when they are busy)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    train, val = _recording(1), _recording(2)
    preprocessing = PreprocessingConfig(fs_hz=FS_HZ, notch_hz=60.0)
    normalization = fit_normalization([train], preprocessing)
    windows = WindowConfig(200.0, 50.0)
    model = RohdeCNN(layout=train.layout, n_classes=4, fs_hz=FS_HZ, band_hz=preprocessing.effective_band_hz,
                     config=CNNConfig(conv_channels=(8, 8), hidden=16))  # fmt: skip

    def featurize(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.frontend(torch.from_numpy(x)).numpy()

    sets = [build_window_set([r], preprocessing=preprocessing, normalization=normalization, windows=windows,
                             featurize=featurize) for r in (train, val)]  # fmt: skip
    xy = [(s.features[s.valid], s.labels[s.valid]) for s in sets]
    train_classifier(model.head, xy[0], xy[1], config=TrainerConfig(max_epochs=15, patience=5, lr=3e-3, device="cpu"))
    out = tmp_path_factory.mktemp("pkg") / "source"
    rng = np.random.default_rng(0)
    export_package(
        model.eval(), out, name="source", version="1", labels=list(GESTURES), layout=train.layout,
        preprocessing=preprocessing, normalization=normalization, windows=windows,
        parity_windows=rng.standard_normal((4, 64, 200)).astype(np.float32), training_data={}, metrics={},
    )  # fmt: skip
    with_alignment_reference(out, [train])
    return out


def _accuracy(package_dir: Path, recording: Recording) -> float:
    from rohde.training.windows_dataset import iter_windows

    package = load_model_package(package_dir)
    session = ort.InferenceSession(str(package.onnx_path), providers=["CPUExecutionProvider"])
    hits, total = 0, 0
    for x, y, ok in iter_windows(recording, preprocessing=package.preprocessing,
                                 normalization=package.normalization, windows=package.windows):  # fmt: skip
        p = session.run(None, {package.metadata.input_name: x})[0]
        hits += int((p.argmax(axis=1)[ok] == y[ok]).sum())
        total += int(ok.sum())
    return hits / total


def test_model_is_rebuilt_from_its_onnx_graph(package_dir: Path) -> None:
    model, remap = model_from_package(load_model_package(package_dir))  # parity checked inside
    assert remap is None and model.head.convs[0].out_channels == 8


def test_calibration_aligns_fine_tunes_and_writes_a_loadable_package(package_dir: Path, tmp_path: Path) -> None:
    moved = [shift_recording(_recording(s), GridShift(rows=3.0, cols=0.0, gain=1.6)) for s in (3, 4)]
    calibration, test = moved[0], moved[1]
    before = _accuracy(package_dir, test)
    result = calibrate_package(package_dir, [calibration], tmp_path / "calibrated", epochs=20)
    assert result.estimate is not None
    assert result.estimate.shift.rows == pytest.approx(3.0, abs=0.5)
    assert result.estimate.shift.gain == pytest.approx(1.6, rel=0.25)
    assert result.seconds["total"] < 60
    package = load_model_package(tmp_path / "calibrated")
    assert package.metadata.alignment == load_model_package(package_dir).metadata.alignment
    assert package.metadata.training_data["calibration"]["windows"] == result.n_windows
    after = _accuracy(tmp_path / "calibrated", test)
    assert after >= 0.9 and after > before + 0.2, (before, after)
    # A calibrated package can be calibrated again: its remap is rebuilt and then replaced.
    _, remap = model_from_package(package)
    assert remap is not None and remap.shape == (64, 64)


def test_calibration_refuses_a_mismatched_recording(package_dir: Path, tmp_path: Path) -> None:
    rec = _recording(5)
    other = Recording(rec.samples, rec.fs_hz, rec.layout, rec.labels, ("w", "x", "y", "z"))
    with pytest.raises(ConfigError):
        calibrate_package(package_dir, [other], tmp_path / "x")
    with pytest.raises(ConfigError):
        calibrate_package(package_dir, [], tmp_path / "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelPackageError):
        calibrate_package(tmp_path / "empty", [rec], tmp_path / "x")


def test_a_package_made_without_a_reference_gets_it_from_its_training_recordings(package_dir: Path,
                                                                                 tmp_path: Path) -> None:
    """`rohde reference`: the package's training trials found again by their ids, checked against its normalisation."""
    shutil.copytree(package_dir, tmp_path / "pkg")
    meta = load_model_package(tmp_path / "pkg").metadata
    with pytest.raises(ConfigError, match="names no training recordings"):
        training_recordings(load_model_package(tmp_path / "pkg"), tmp_path)
    write_metadata(tmp_path / "pkg", meta.model_copy(update={
        "alignment": None, "training_data": {"split": {"train": [recording_id(_recording(1))]}}}))  # fmt: skip
    package = load_model_package(tmp_path / "pkg")
    for folder, seed in (("same", 1), ("other", 7)):
        (tmp_path / folder).mkdir()
        replace(_recording(seed), trial="1").save(tmp_path / folder / "train")  # the training trial's id
        _recording(2).save(tmp_path / folder / "val")
    with pytest.raises(ConfigError, match="not those"):
        training_recordings(package, tmp_path / "other")
    (tmp_path / "none").mkdir()
    _recording(2).save(tmp_path / "none" / "val")
    with pytest.raises(ConfigError, match="1 of the 1 training recordings"):
        training_recordings(package, tmp_path / "none")
    assert main(["reference", "--model", str(tmp_path / "pkg"), "--data", str(tmp_path / "same")]) == 0
    stored = load_model_package(tmp_path / "pkg")
    assert stored.metadata.alignment == meta.alignment  # the map `with_alignment_reference` made of the same trial
    assert stored.metadata.onnx_sha256 == meta.onnx_sha256
    assert stored.metadata.training_data == package.metadata.training_data
