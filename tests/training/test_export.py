from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from rohde.core.errors import ModelPackageError
from rohde.core.layouts import default_layout
from rohde.core.model_package import load_model_package
from rohde.core.preprocessing import Normalization, PreprocessingConfig
from rohde.core.windows import WindowConfig
from rohde.training.cnn import RohdeCNN
from rohde.training.config import CNNConfig
from rohde.training.export import PARITY_TOLERANCE, export_package, ort_latency_ms

logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    layout = default_layout()
    model = RohdeCNN(layout=layout, n_classes=7, fs_hz=2048.0, band_hz=(20.0, 450.0), config=CNNConfig()).eval()
    rng = np.random.default_rng(0)
    parity = (rng.standard_normal((16, 192, 410)) * rng.uniform(0.1, 5, (16, 1, 1))).astype(np.float32)
    out = tmp_path_factory.mktemp("pkg")
    _, diff = export_package(
        model, out, name="t", version="0", labels=[f"g{i}" for i in range(7)], layout=layout,
        preprocessing=PreprocessingConfig(fs_hz=2048.0), normalization=Normalization((3.0,) * 192),
        windows=WindowConfig(200.0, 50.0), parity_windows=parity, training_data={"test": True},
        metrics={"clean": {"accuracy": 1.0}},
    )  # fmt: skip
    assert diff <= PARITY_TOLERANCE
    return out


def test_package_loads_and_describes_the_graph(package_dir: Path) -> None:
    import onnxruntime as ort

    package = load_model_package(package_dir)
    meta = package.metadata
    assert meta.input_shape == ["batch", 192, 410] and meta.output_shape == ["batch", 7]
    assert package.onnx_path.stat().st_size < 5 * 1024 * 1024
    session = ort.InferenceSession(str(package.onnx_path), providers=["CPUExecutionProvider"])
    probs = session.run([meta.output_name], {meta.input_name: np.zeros((5, 192, 410), np.float32)})[0]
    assert probs.shape == (5, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_latency_is_measured(package_dir: Path) -> None:
    latency = ort_latency_ms(package_dir / "model.onnx", n_channels=192, window_samples=410, runs=200)
    logger.warning("ORT single-thread latency per window: %s", latency)  # printed, not asserted
    assert latency["median_ms"] > 0


def test_loading_rejects_missing_file_wrong_checksum_and_inconsistent_metadata(
    package_dir: Path, tmp_path: Path
) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(package_dir, broken)
    (broken / "model.onnx").write_bytes((broken / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(ModelPackageError, match="Checksum"):
        load_model_package(broken)

    shutil.rmtree(broken)
    shutil.copytree(package_dir, broken)
    meta = json.loads((broken / "metadata.json").read_text())
    meta["window_samples"] = 100
    (broken / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelPackageError, match="Inconsistent"):
        load_model_package(broken)

    (broken / "model.onnx").unlink()
    with pytest.raises(ModelPackageError, match="no model.onnx"):
        load_model_package(broken)
