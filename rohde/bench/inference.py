"""The inference section: ONNX Runtime against PyTorch eager on the same weights, per batch size."""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rohde.bench.config import BenchConfig
from rohde.core.errors import ConfigError

logger = logging.getLogger(__name__)


def bench_inference(config: BenchConfig, model: Path) -> dict[str, Any]:
    """ONNX Runtime against PyTorch eager on the same weights: the default CNN architecture at the
    package's layout and rate, exported with the training exporter. One thread each on CPU."""
    import onnxruntime as ort
    import torch

    from rohde.core.model_package import load_model_package
    from rohde.training.cnn import ProbabilityModel, RohdeCNN
    from rohde.training.config import CNNConfig
    from rohde.training.export import INPUT_NAME, OUTPUT_NAME, export_onnx

    package = load_model_package(model)
    meta = package.metadata
    torch.manual_seed(0)
    net = RohdeCNN(layout=package.layout, n_classes=len(meta.labels), fs_hz=meta.fs_hz,
                   band_hz=package.preprocessing.effective_band_hz, config=CNNConfig()).eval()
    wrapper = ProbabilityModel(net).eval()
    device = "cuda" if config.gpu else "cpu"
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if config.gpu else ["CPUExecutionProvider"]
    if config.gpu and not torch.cuda.is_available():
        raise ConfigError("--gpu needs a CUDA build of torch and a visible GPU; torch.cuda.is_available() is False.")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(net, Path(tmp) / "model.onnx", n_channels=meta.n_channels,
                                window_samples=meta.window_samples)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        served = ort.InferenceSession(str(package.onnx_path), options, providers=providers)
    # The providers the sessions really run on: onnxruntime-gpu falls back to CPU without saying so.
    provider, served_provider = session.get_providers()[0], served.get_providers()[0]
    if config.gpu and {provider, served_provider} != {"CUDAExecutionProvider"}:
        raise ConfigError(f"--gpu asked for CUDA but ONNX Runtime runs on {provider} (served package: "
                          f"{served_provider}); install onnxruntime-gpu and check the CUDA 13 / cuDNN 9 libraries.")
    wrapper = wrapper.to(device)
    rng = np.random.default_rng(0)
    rows = []
    for b in config.batch_sizes:
        x = rng.standard_normal((b, meta.n_channels, meta.window_samples)).astype(np.float32)
        xt = torch.from_numpy(x).to(device)

        def run_torch(xt: torch.Tensor = xt) -> None:
            with torch.inference_mode():
                wrapper(xt)
            if config.gpu:
                torch.cuda.synchronize()

        run_ort = _ort_runner(session, INPUT_NAME, OUTPUT_NAME, x, gpu=config.gpu)
        run_served = _ort_runner(served, meta.input_name, meta.output_name, x, gpu=config.gpu)
        t_torch = _median_time(run_torch, config.inference_s)
        t_ort = _median_time(run_ort, config.inference_s)
        t_served = _median_time(run_served, config.inference_s / 2)
        rows.append({"batch": b, "torch_ms": round(t_torch * 1000, 4), "ort_ms": round(t_ort * 1000, 4),
                     "torch_ms_per_window": round(t_torch * 1000 / b, 4),
                     "ort_ms_per_window": round(t_ort * 1000 / b, 4),
                     "ratio_torch_over_ort": round(t_torch / t_ort, 2),
                     "served_package_ort_ms_per_window": round(t_served * 1000 / b, 4)})
        logger.info("Inference batch %d: torch %.3f ms, ORT %.3f ms (x%.1f).", b, t_torch * 1000, t_ort * 1000,
                    t_torch / t_ort)
    with torch.inference_mode():
        xp = rng.standard_normal((4, meta.n_channels, meta.window_samples)).astype(np.float32)
        expected = wrapper(torch.from_numpy(xp).to(device)).cpu().numpy()
    got = session.run([OUTPUT_NAME], {INPUT_NAME: xp})[0]
    return {"provider": provider, "served_package_provider": served_provider, "device": device, "threads": 1,
            "io_binding": config.gpu,
            "architecture": "default RohdeCNN (CNNConfig defaults), seeded random weights, same weights in both",
            "served_package": str(model), "parity_max_abs": float(np.max(np.abs(got - expected))), "rows": rows}


def _ort_runner(session: Any, input_name: str, output_name: str, x: np.ndarray, *, gpu: bool) -> Any:
    if not gpu:
        return lambda: session.run([output_name], {input_name: x})
    import onnxruntime as ort

    # IO binding keeps the input on the GPU between runs, as a server would after one upload.
    binding = session.io_binding()
    binding.bind_ortvalue_input(input_name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
    binding.bind_output(output_name, "cuda")

    def run() -> None:
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    return run


def _median_time(fn: Any, budget_s: float, min_runs: int = 10) -> float:
    for _ in range(3):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while time.perf_counter() < deadline or len(times) < min_runs:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
