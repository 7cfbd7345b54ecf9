"""A tiny valid model package without torch: log mean-square per channel -> linear -> softmax.

Smoke runs of the benchmark and the server tests serve it; with fitted weights (the tests fit a
logistic regression) different gestures really map to different classes. Needs `onnx` (the
`train` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rohde.core.errors import ConfigError
from rohde.core.layouts import ElectrodeLayout, grid_layout
from rohde.core.model_package import ModelMetadata, sha256_of, write_metadata
from rohde.core.preprocessing import Normalization, PreprocessingConfig
from rohde.core.windows import WindowConfig

TINY_LABELS = ("rest", "g1", "g2", "g3")


def write_tiny_onnx(path: Path, weights: np.ndarray, bias: np.ndarray, *, window_samples: int) -> None:
    """The graph `softmax(log(mean(emg**2, time) + 1e-6) @ weights + bias)` on `(batch, n_channels,
    window_samples)` input; `weights` is `(n_channels, n_classes)`, `bias` `(n_classes,)`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n_channels, n_classes = weights.shape
    nodes = [
        helper.make_node("Mul", ["emg", "emg"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[2], keepdims=0),
        helper.make_node("Add", ["ms", "eps"], ["ms_eps"]),
        helper.make_node("Log", ["ms_eps"], ["logp"]),
        helper.make_node("MatMul", ["logp", "W"], ["lin"]),
        helper.make_node("Add", ["lin", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_logreg",
        [helper.make_tensor_value_info("emg", TensorProto.FLOAT, ["batch", n_channels, window_samples])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", n_classes])],
        initializer=[numpy_helper.from_array(weights.astype(np.float32), "W"),
                     numpy_helper.from_array(bias.astype(np.float32), "b"),
                     numpy_helper.from_array(np.array(1e-6, dtype=np.float32), "eps")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def build_tiny_package(target: Path, *, layout: ElectrodeLayout | None = None, labels: Sequence[str] = TINY_LABELS,
                       fs_hz: float = 1000.0, weights: np.ndarray | None = None, bias: np.ndarray | None = None,
                       normalization: Normalization | None = None, preprocessing: PreprocessingConfig | None = None,
                       window_ms: float = 200.0, hop_ms: float = 50.0, name: str | None = None, version: str = "0",
                       created_utc: str | None = None, training_data: dict[str, Any] | None = None) -> Path:
    """Write the tiny package to `target` (created) and return it.

    `layout` defaults to a 16-channel 1x4x4 grid; `weights` `(n_channels, len(labels))` to seeded
    random ones, `bias` to zeros, `normalization` to 20 uV per channel, `preprocessing` to the
    defaults at `fs_hz`, `name` to the folder name and `created_utc` to now.
    """
    layout = layout or grid_layout(1, 4, 4, name="1x4x4")
    n_channels, n_classes = layout.n_channels, len(labels)
    if weights is None:
        weights = np.random.default_rng(0).standard_normal((n_channels, n_classes))
    bias = np.zeros(n_classes) if bias is None else bias
    if weights.shape != (n_channels, n_classes) or bias.shape != (n_classes,):
        raise ConfigError(f"weights {weights.shape} and bias {bias.shape} must be {(n_channels, n_classes)} and "
                          f"{(n_classes,)} for {n_channels} channels and {n_classes} labels.")
    normalization = normalization or Normalization(scale_uv=(20.0,) * n_channels)
    preprocessing = preprocessing or PreprocessingConfig(fs_hz=fs_hz)
    windows = WindowConfig(window_ms, hop_ms)
    window = windows.window_samples(fs_hz)
    target.mkdir(parents=True, exist_ok=True)
    write_tiny_onnx(target / "model.onnx", weights, bias, window_samples=window)
    meta = ModelMetadata(
        name=name or target.name, version=version,
        created_utc=created_utc or datetime.now(UTC).isoformat(timespec="seconds"), labels=list(labels),
        fs_hz=fs_hz, n_channels=n_channels, layout=layout.to_dict(), channel_map=layout.channel_map(),
        window_ms=window_ms, hop_ms=hop_ms, window_samples=window, preprocessing=preprocessing.to_dict(),
        normalization=normalization.to_dict(), input_name="emg", input_shape=["batch", n_channels, window],
        output_name="probabilities", output_shape=["batch", n_classes],
        training_data=training_data or {"source": "none: random weights for benchmark smoke runs"}, metrics={},
        onnx_sha256=sha256_of(target / "model.onnx"),
    )
    write_metadata(target, meta)
    return target
