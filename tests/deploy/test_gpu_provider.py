"""The provider the server reports is the one its ONNX Runtime session really runs on, and `require_gpu`
refuses CPU. Without a GPU the CUDA build is imitated by one mock only: `get_available_providers` lists
CUDA, as onnxruntime-gpu does on a machine without a usable GPU; the sessions are real and fall back to
CPU exactly as onnxruntime-gpu's do. Where a GPU and onnxruntime-gpu exist, the last test runs for real."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from rohde.bench import gpu_check
from rohde.bench.gpu_check import GpuCheckConfig, GpuCheckError, run_gpu_check
from rohde.core.errors import ConfigError, ModelPackageError
from rohde.core.model_package import load_model_package
from rohde.server import inference
from rohde.server.app import create_app
from rohde.server.inference import CPU, CUDA, GpuRequiredError, InferenceEngine, ModelManager, choose_providers
from rohde.server.processes import unique_id
from rohde.server.settings import default_lsl_config, default_models_dir, load_settings

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(120),
              # ORT warns that the listed-but-missing CUDA provider is not really there: that is the point.
              pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider':UserWarning")]

SHIPPED = "rohde-default"


@pytest.fixture
def cuda_listed_but_unusable(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu without a usable GPU: CUDA is listed, the session runs on CPU."""
    if CUDA in ort.get_available_providers():
        pytest.skip("This ONNX Runtime really offers CUDA; the imitation is for CPU builds.")
    monkeypatch.setattr(inference.ort, "get_available_providers", lambda: [CUDA, CPU])


def test_require_gpu_needs_a_cuda_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference.ort, "get_available_providers", lambda: [CPU])
    assert choose_providers() == [CPU]
    with pytest.raises(GpuRequiredError, match="offers only .*CPUExecutionProvider.*install onnxruntime-gpu"):
        choose_providers(require_gpu=True)
    monkeypatch.setattr(inference.ort, "get_available_providers", lambda: [CUDA, CPU])
    assert choose_providers(require_gpu=True) == [CUDA, CPU]
    with pytest.raises(GpuRequiredError, match="do not include CUDAExecutionProvider"):
        choose_providers([CPU], require_gpu=True)
    assert issubclass(GpuRequiredError, ModelPackageError)  # PUT /models/active answers 422, model kept


def test_engine_reports_cpu_when_cuda_is_listed_but_unusable(cuda_listed_but_unusable: None,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    package = load_model_package(default_models_dir() / SHIPPED)
    with caplog.at_level(logging.WARNING, logger="rohde.server.inference"):
        engine = InferenceEngine(package)
    assert engine.session.get_providers() == [CPU]
    assert engine.provider == CPU  # the session's truth, not the [CUDA, CPU] asked for
    assert "CUDA was asked" in caplog.text and "runs on CPUExecutionProvider" in caplog.text
    with pytest.raises(GpuRequiredError, match="Refused: a GPU is required"):
        InferenceEngine(package, require_gpu=True)


def test_require_gpu_keeps_the_running_model(cuda_listed_but_unusable: None) -> None:
    models = ModelManager(default_models_dir())
    models.activate(SHIPPED)
    assert models.active_provider == CPU
    models.require_gpu = True
    with pytest.raises(GpuRequiredError):
        models.activate(SHIPPED)
    assert models.active is not None and models.active.generation == 1


def _settings(**overrides: object):  # type: ignore[no-untyped-def]
    return load_settings(model=SHIPPED, stream_name=unique_id("gpu-check"), marker_outlet=False,
                         resolve_interval_s=0.5, lsl_config=default_lsl_config(), **overrides)


def test_health_and_ready_name_the_provider_in_use(cuda_listed_but_unusable: None) -> None:
    with TestClient(create_app(_settings())) as client:
        health, ready = client.get("/health").json(), client.get("/ready")
    assert ready.status_code == 200
    assert health["provider"] == ready.json()["provider"] == ready.json()["model"]["provider"] == CPU


def test_app_refuses_to_start_on_cpu_with_require_gpu(cuda_listed_but_unusable: None) -> None:
    with pytest.raises(GpuRequiredError, match="runs on CPUExecutionProvider"):
        with TestClient(create_app(_settings(require_gpu=True))):
            pass


def test_rohde_serve_require_gpu_exits_with_a_clear_error(tmp_path: Path) -> None:
    """No mock: the real command on this machine's ONNX Runtime. A CPU build has no CUDA provider at all."""
    if CUDA in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here; the real-GPU test below covers this machine.")
    env = {**os.environ, "LSLAPICFG": str(default_lsl_config())}
    result = subprocess.run([sys.executable, "-m", "rohde.cli", "serve", "--port", "0", "--require-gpu",
                             "--no-marker-outlet", "--stream-name", unique_id("gpu-check")],
                            capture_output=True, text=True, timeout=90, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "A GPU is required" in result.stderr and "install onnxruntime-gpu" in result.stderr
    assert "Traceback" not in result.stderr and "Uvicorn running" not in result.stderr


_SERVE_WITH_CUDA_LISTED = """
import sys, warnings
import onnxruntime
warnings.simplefilter("ignore")
onnxruntime.get_available_providers = lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
from rohde.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_rohde_serve_require_gpu_exits_when_the_session_falls_back_to_cpu(tmp_path: Path) -> None:
    """onnxruntime-gpu without a usable GPU, imitated in the child: the start-up reads the real session."""
    if CUDA in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here; the real-GPU test below covers this machine.")
    env = {**os.environ, "LSLAPICFG": str(default_lsl_config())}
    result = subprocess.run([sys.executable, "-c", _SERVE_WITH_CUDA_LISTED, "serve", "--port", "0", "--require-gpu",
                             "--no-marker-outlet", "--stream-name", unique_id("gpu-check")],
                            capture_output=True, text=True, timeout=90, env=env, cwd=tmp_path)
    assert result.returncode == 3, result.stderr[-2000:]  # uvicorn's start-up failure
    assert "runs on CPUExecutionProvider" in result.stderr and "Refused: a GPU is required" in result.stderr
    assert "Application startup failed" in result.stderr and "Uvicorn running" not in result.stderr


def _nvidia_device() -> str | None:
    if Path("/dev/nvidia0").exists():
        return "/dev/nvidia0"
    smi = shutil.which("nvidia-smi")
    if smi and subprocess.run([smi, "-L"], capture_output=True, timeout=30).returncode == 0:
        return "nvidia-smi -L"
    return None


def test_real_gpu_session_runs_on_cuda_and_matches_cpu() -> None:
    device = _nvidia_device()
    if device is None:
        pytest.skip("CUDA is really absent here: no /dev/nvidia0 and no working nvidia-smi.")
    if CUDA not in ort.get_available_providers():
        pytest.skip(f"A GPU is present ({device}) but this ONNX Runtime is the CPU build "
                    f"({ort.get_available_providers()}); install onnxruntime-gpu to run this test.")
    package = load_model_package(default_models_dir() / SHIPPED)
    gpu = InferenceEngine(package, require_gpu=True)  # raises if the session fell back to CPU
    assert gpu.session.get_providers()[0] == CUDA
    cpu = InferenceEngine(package, providers=[CPU])
    meta = package.metadata
    batch = np.random.default_rng(0).standard_normal((32, meta.n_channels, meta.window_samples)).astype(np.float32)
    np.testing.assert_allclose(gpu.run(batch), cpu.run(batch), atol=1e-4)


def test_gpu_check_stops_without_cuda_and_reports_no_figure(tmp_path: Path) -> None:
    """No mock: on a machine without CUDA the check fails loudly and writes no latency or parity figure."""
    if CUDA in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here: bench/gpu_check.sh runs the real checks.")
    with pytest.raises(GpuCheckError, match="provider: GpuRequiredError"):
        run_gpu_check(GpuCheckConfig(out_dir=tmp_path, command="pytest"))
    results = json.loads((tmp_path / "gpu_results.json").read_text())
    assert results["passed"] is False and list(results["checks"]) == ["provider"]
    assert "FAILED" in (tmp_path / "gpu_results.md").read_text()


def test_gpu_check_measures_parity_and_latency_with_the_engines_it_is_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU engine is the one thing that cannot exist here: a second CPU engine stands in for it."""
    package = load_model_package(default_models_dir() / SHIPPED)
    stand_ins = (InferenceEngine(package, providers=[CPU]), InferenceEngine(package, providers=[CPU]))
    monkeypatch.setattr(gpu_check, "engines", lambda _package: stand_ins)
    results = run_gpu_check(GpuCheckConfig(out_dir=tmp_path, n_windows=96, latency_runs=20, bench=False, train=False,
                                           command="pytest"))
    parity = results["checks"]["parity"]
    assert parity["passed"] and parity["n_windows"] == 96 and parity["max_abs_diff"] == 0.0
    assert parity["argmax_agreement"] == 1.0
    for provider in (CUDA, CPU):
        rows = results["checks"]["latency"][provider]
        assert set(rows) == {"1", "32"} and all(r["median_ms"] > 0 and r["runs"] == 20 for r in rows.values())
    assert "all checks passed" in (tmp_path / "gpu_results.md").read_text()
    # Probabilities further apart than the tolerance fail the parity check.
    meta = package.metadata
    batch = np.random.default_rng(1).standard_normal((40, meta.n_channels, meta.window_samples)).astype(np.float32)
    off = gpu_check.parity(lambda x: stand_ins[0].run(x) + 2e-3, stand_ins[1].run, batch, tolerance=1e-3)
    assert not off["passed"] and off["max_abs_diff"] == pytest.approx(2e-3, rel=1e-3)


def test_bench_gpu_refuses_cpu(tmp_path: Path) -> None:
    """`rohde bench --gpu` never records CPU figures as GPU ones: its servers must run on CUDA, and its
    inference section refuses a machine without a CUDA build of torch."""
    from rohde.bench.config import BenchConfig, server_overrides
    from rohde.bench.inference import bench_inference

    assert server_overrides(BenchConfig(gpu=True))["ROHDE_REQUIRE_GPU"] == "true"
    assert "ROHDE_REQUIRE_GPU" not in server_overrides(BenchConfig(gpu=False))
    import torch

    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU here: bench/gpu_check.sh runs the real --gpu sections.")
    with pytest.raises(ConfigError, match="CUDA"):
        bench_inference(BenchConfig(gpu=True, out_dir=tmp_path), default_models_dir() / SHIPPED)
