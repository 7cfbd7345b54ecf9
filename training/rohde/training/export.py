"""ONNX export of a trained classifier into a self-describing model package.

The exported graph takes `(batch, n_channels, window_samples)` normalised windows in stream
channel order and returns class probabilities `(batch, n_classes)`; the channel -> grid gather
is a constant inside the graph. `export_package` writes `model.onnx`, checks parity against
PyTorch with ONNX Runtime, then writes `metadata.json` through the shared schema (with the training
data's alignment reference when given) and reloads the package with `load_model_package` so a broken
package never leaves this function.
"""

from __future__ import annotations

import logging
import statistics
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rohde.core.alignment import AlignmentReference
from rohde.core.errors import ModelPackageError
from rohde.core.layouts import ElectrodeLayout
from rohde.core.model_package import (
    MODEL_FILE,
    ModelMetadata,
    ModelPackage,
    load_model_package,
    sha256_of,
    write_metadata,
)
from rohde.core.preprocessing import Normalization, PreprocessingConfig
from rohde.core.windows import WindowConfig
from rohde.training.cnn import ProbabilityModel, RohdeCNN

logger = logging.getLogger(__name__)

INPUT_NAME = "windows"
OUTPUT_NAME = "probabilities"
OPSET = 17
PARITY_TOLERANCE = 1e-4  # max abs difference of probabilities, ONNX Runtime vs PyTorch


def export_onnx(model: RohdeCNN, path: Path, *, n_channels: int, window_samples: int) -> Path:
    """Write the probability graph with a dynamic batch axis (opset 17)."""
    wrapper = ProbabilityModel(model).cpu().eval()
    example = torch.zeros(1, n_channels, window_samples)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but needs no onnxscript and handles this graph exactly.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def parity_check(model: RohdeCNN, onnx_path: Path, windows: np.ndarray) -> float:
    """Max abs difference of probabilities between ONNX Runtime and PyTorch on `windows` (N, C, W)."""
    import onnxruntime as ort

    wrapper = ProbabilityModel(model).cpu().eval()
    with torch.no_grad():
        expected = wrapper(torch.as_tensor(windows, dtype=torch.float32)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: windows.astype(np.float32)})[0]
    return float(np.max(np.abs(got - expected)))


def ort_latency_ms(onnx_path: Path, *, n_channels: int, window_samples: int, runs: int = 2000) -> dict[str, float]:
    """Median / p95 time of one single-window run on one CPU thread (intra_op_num_threads=1)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, n_channels, window_samples)).astype(np.float32)
    for _ in range(min(50, runs)):
        session.run([OUTPUT_NAME], {INPUT_NAME: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run([OUTPUT_NAME], {INPUT_NAME: x})
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p95_ms": times[int(0.95 * (len(times) - 1))],
        "runs": float(runs),
    }


def export_package(
    model: RohdeCNN,
    out_dir: str | Path,
    *,
    name: str,
    version: str,
    labels: list[str],
    layout: ElectrodeLayout,
    preprocessing: PreprocessingConfig,
    normalization: Normalization,
    windows: WindowConfig,
    parity_windows: np.ndarray,
    training_data: dict[str, Any],
    metrics: dict[str, Any],
    alignment: AlignmentReference | None = None,
) -> tuple[ModelPackage, float]:
    """Write `out_dir/model.onnx` + `metadata.json`; returns the loaded package and the parity error.

    `alignment`: the MAV map of the model's training data (`AlignmentReference.from_recordings`), stored as
    `ModelMetadata.alignment` for label-free re-alignment after the array is put on again.
    """
    out_dir = Path(out_dir)
    fs_hz = preprocessing.fs_hz
    window_samples = windows.window_samples(fs_hz)
    onnx_path = export_onnx(model, out_dir / MODEL_FILE, n_channels=layout.n_channels, window_samples=window_samples)
    parity = parity_check(model, onnx_path, parity_windows)
    if parity > PARITY_TOLERANCE:
        raise ModelPackageError(
            f"ONNX Runtime and PyTorch differ by {parity:.2e} on the parity windows (limit {PARITY_TOLERANCE:.0e}); "
            "the export is not faithful."
        )
    meta = ModelMetadata(
        name=name,
        version=version,
        created_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        labels=list(labels),
        fs_hz=fs_hz,
        n_channels=layout.n_channels,
        layout=layout.to_dict(),
        channel_map=layout.channel_map(),
        window_ms=windows.window_ms,
        hop_ms=windows.hop_ms,
        window_samples=window_samples,
        preprocessing=preprocessing.to_dict(),
        normalization=normalization.to_dict(),
        input_name=INPUT_NAME,
        input_shape=["batch", layout.n_channels, window_samples],
        output_name=OUTPUT_NAME,
        output_shape=["batch", len(labels)],
        training_data=training_data,
        metrics=metrics,
        alignment=alignment.to_dict() if alignment is not None else None,
        onnx_sha256=sha256_of(onnx_path),
    )
    write_metadata(out_dir, meta)
    package = load_model_package(out_dir)
    logger.info("Exported %s (%.1f kB), parity %.2e", onnx_path, onnx_path.stat().st_size / 1024, parity)
    return package, parity
