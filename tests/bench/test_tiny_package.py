"""The tiny package: ONNX Runtime computes softmax(log mean-square @ W + b), and bad shapes are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rohde.bench.tiny_package import build_tiny_package
from rohde.core.errors import ConfigError
from rohde.core.model_package import load_model_package


def test_tiny_package_computes_its_formula(tmp_path: Path) -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    weights, bias = rng.standard_normal((16, 4)), rng.standard_normal(4)
    package = load_model_package(build_tiny_package(tmp_path / "tiny", weights=weights, bias=bias))
    meta = package.metadata
    assert (meta.n_channels, meta.window_samples, meta.labels) == (16, 200, ["rest", "g1", "g2", "g3"])
    x = rng.standard_normal((3, 16, meta.window_samples)).astype(np.float32)
    session = ort.InferenceSession(str(package.onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {meta.input_name: x})[0]
    logits = np.log(np.mean(x.astype(np.float64) ** 2, axis=2) + 1e-6) @ weights + bias
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(got, expected / expected.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_tiny_package_refuses_weights_of_another_shape(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="weights"):
        build_tiny_package(tmp_path / "tiny", weights=np.zeros((8, 4)))
