"""ONNX Runtime sessions on the tiny packages: activation, refusal that keeps the running model,
batches of probabilities, and the providers asked for and really used."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from rohde.core.errors import ModelPackageError
from rohde.core.model_package import load_model_package
from rohde.core.preprocessing import PreprocessingConfig
from rohde.server import inference
from rohde.server.inference import CPU, CUDA, InferenceEngine, ModelManager, choose_providers

from .conftest import FS_HZ, GESTURES, N_CHANNELS, ModelSet, windows_and_labels

pytestmark = pytest.mark.timeout(60)


def edit_metadata(package: Path, **changes: object) -> None:
    meta_path = package / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta.update(changes)
    meta_path.write_text(json.dumps(meta))


@pytest.fixture
def models_dir(model_set: ModelSet, tmp_path: Path) -> Path:
    """good, good2 and broken (bad checksum) from `model_set`, plus `inconsistent` (metadata says 8
    channels for a 16-channel layout) and `wrong_input` (consistent metadata naming an input the graph
    does not have)."""
    for name in ("good", "good2", "broken"):
        shutil.copytree(model_set.models_dir / name, tmp_path / name)
    shutil.copytree(tmp_path / "good", tmp_path / "inconsistent")
    edit_metadata(tmp_path / "inconsistent", n_channels=8)
    shutil.copytree(tmp_path / "good", tmp_path / "wrong_input")
    edit_metadata(tmp_path / "wrong_input", input_name="no_such_input")
    return tmp_path


def test_activate_a_valid_package(models_dir: Path) -> None:
    models = ModelManager(models_dir)
    assert models.active is None and models.describe_active() == "no model"
    active = models.activate("good")
    assert active.generation == 1 and active.package.metadata.name == "good"
    assert models.active is active and models.engine_for(1) is active.engine and models.last_error is None
    assert active.engine.n_classes == len(GESTURES)


@pytest.mark.parametrize(("package", "reason"), [
    ("broken", "Checksum of"),
    ("inconsistent", "layout has 16 channels, n_channels is 8"),
    ("wrong_input", "'no_such_input'"),
    ("missing", "No model package 'missing' in the models folder"),
    ("../good", "holds a separator"),
])
def test_refused_package_keeps_the_running_model(models_dir: Path, package: str, reason: str) -> None:
    models = ModelManager(models_dir)
    before = models.activate("good")
    with pytest.raises(ModelPackageError, match=reason.replace("(", r"\(")) as refused:
        models.activate(package)
    assert models.active is before and models.active.generation == 1
    assert models.active.package.metadata.name == "good"
    assert models.last_error == str(refused.value)
    # A refusal uses up no generation, and a later valid activation clears the error.
    assert models.activate("good2").generation == 2 and models.last_error is None


def test_available_lists_every_package_with_its_validity(models_dir: Path) -> None:
    rows = {row["name"]: row for row in ModelManager(models_dir).available()}
    assert set(rows) == {"good", "good2", "broken", "inconsistent", "wrong_input"}
    assert rows["good"]["valid"] and rows["good"]["n_channels"] == N_CHANNELS and rows["good"]["fs_hz"] == FS_HZ
    assert not rows["broken"]["valid"] and "Checksum" in str(rows["broken"]["error"])
    assert not rows["inconsistent"]["valid"] and rows["inconsistent"]["labels"] is None
    # Valid means it really loads: a graph without the input its metadata names is listed invalid too.
    assert not rows["wrong_input"]["valid"] and "'no_such_input'" in str(rows["wrong_input"]["error"])


def test_old_engines_are_released_beyond_keep_engines(models_dir: Path) -> None:
    models = ModelManager(models_dir, keep_engines=2)
    for name in ("good", "good2", "good"):
        models.activate(name)
    assert models.engine_for(1) is None
    assert models.engine_for(2) is not None and models.engine_for(3) is models.active.engine  # type: ignore[union-attr]


def test_engine_runs_a_batch_of_probabilities(model_set: ModelSet) -> None:
    package = load_model_package(model_set.models_dir / "good")
    engine = InferenceEngine(package)
    windows, labels, _ = windows_and_labels(model_set.recording, PreprocessingConfig(fs_hz=FS_HZ),
                                            package.normalization, hop=500)
    batch = windows[:7].astype(np.float32)  # (7, C, W)
    assert batch.shape == (7, N_CHANNELS, package.metadata.window_samples)
    probabilities = engine.run(batch)
    assert probabilities.shape == (7, len(GESTURES)) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities >= 0).all()
    # A batch gives each window what it gets alone.
    np.testing.assert_allclose(engine.run(batch[3:4])[0], probabilities[3], rtol=1e-5, atol=1e-6)


def test_choose_providers_prefers_cuda_only_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference.ort, "get_available_providers", lambda: [CPU])
    assert choose_providers() == [CPU]
    monkeypatch.setattr(inference.ort, "get_available_providers", lambda: [CUDA, CPU])
    assert choose_providers() == [CUDA, CPU]
    assert choose_providers([CPU]) == [CPU]


def test_explicit_providers_are_checked(model_set: ModelSet) -> None:
    available = ort.get_available_providers()
    assert choose_providers([CPU]) == [CPU]
    with pytest.raises(ModelPackageError, match="NoSuchExecutionProvider") as refused:
        choose_providers(["NoSuchExecutionProvider", CPU])
    assert str(available) in str(refused.value)
    models = ModelManager(model_set.models_dir, providers=["NoSuchExecutionProvider"])
    with pytest.raises(ModelPackageError, match="not available here"):
        models.activate("good")
    assert models.active is None


def test_engine_reports_the_provider_the_session_uses(model_set: ModelSet) -> None:
    package = load_model_package(model_set.models_dir / "good")
    engine = InferenceEngine(package)
    assert engine.provider == engine.session.get_providers()[0]
    if CUDA not in ort.get_available_providers():
        assert engine.provider == CPU
    explicit = InferenceEngine(package, providers=[CPU])
    assert explicit.provider == CPU and explicit.session.get_providers() == [CPU]
