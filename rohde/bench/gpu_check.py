"""`python -m rohde.bench gpu` (bench/gpu_check.sh): every GPU figure in one run, or a loud failure.

In turn: the ONNX Runtime provider the shipped model's session really runs on (CUDA or the run stops
there, with no figure written as a GPU one); CPU/GPU parity of its probabilities on simulated windows;
latency per window and per batch of 32 on both providers; the benchmark's inference and latency sections
with `--gpu` (stored under the `gpu` label of bench/results.json); training with configs/tiny.json on
CUDA. Writes bench/gpu_results.json and bench/gpu_results.md; exits non-zero if any check failed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rohde.bench.config import LSL_CONFIG, REPO_ROOT
from rohde.core.errors import RohdeError

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# Probabilities may differ by this much between the CPU and CUDA providers: cuDNN picks other convolution
# algorithms and may use TF32 on Ampere and newer GPUs (about 10 bits of mantissa in the products).
PARITY_TOLERANCE = 1e-3


class GpuCheckError(RohdeError):
    """A GPU check failed: CUDA is not really in use, or a figure is out of its stated bounds."""


@dataclass(frozen=True)
class GpuCheckConfig:
    out_dir: Path = REPO_ROOT / "bench"  # gpu_results.json and .md; the bench sections go to results.json here
    model: Path | None = None  # model package; None: the shipped rohde-default
    n_windows: int = 512  # windows compared for parity
    tolerance: float = PARITY_TOLERANCE  # max |p_gpu - p_cpu| allowed
    latency_runs: int = 300  # timed runs per (provider, batch size)
    bench: bool = True  # run the benchmark's inference and latency sections with --gpu
    bench_step_s: float = 15.0  # measured seconds per stream count in the latency section
    bench_streams: tuple[int, ...] = (1, 8, 32)  # stream counts of the latency section
    train: bool = True  # train configs/tiny.json on CUDA
    command: str = ""


def run_gpu_check(config: GpuCheckConfig) -> dict[str, Any]:
    """Run every check; write the results (also when one fails) and raise GpuCheckError on failure."""
    os.environ.setdefault("LSLAPICFG", str(LSL_CONFIG))
    results: dict[str, Any] = {"meta": {"date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                                        "command": config.command, "environment": environment()},
                               "checks": {}}
    started = time.monotonic()
    checks: dict[str, Any] = results["checks"]
    try:
        package = _package(config.model)
        gpu, cpu = engines(package)
    except Exception as exc:  # no CUDA: nothing below would be a GPU figure
        logger.error("CUDA is not in use, no GPU figure is measured: %s", exc)
        checks["provider"] = {"passed": False, "error": f"{type(exc).__name__}: {exc}"}
    else:
        checks["provider"] = {"passed": True, "session_providers": gpu.session.get_providers()}
        windows: list[np.ndarray] = []  # simulated once, by the first step that needs them

        def simulated() -> np.ndarray:
            if not windows:
                windows.append(simulated_windows(package, config.n_windows))
            return windows[0]

        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("parity", lambda: parity(gpu.run, cpu.run, simulated(), tolerance=config.tolerance)),
            ("latency", lambda: {CUDA: latency(gpu.run, simulated(), runs=config.latency_runs),
                                 CPU: latency(cpu.run, simulated(), runs=config.latency_runs)}),
        ]
        if config.bench:
            steps.append(("bench", lambda: _bench_sections(config)))
        if config.train:
            steps.append(("training", lambda: _train_tiny_on_cuda(config)))
        for name, step in steps:
            logger.info("GPU check: %s.", name)
            try:
                checks[name] = step()
            except Exception as exc:  # recorded; the run goes on to the next check
                logger.exception("GPU check %s failed.", name)
                checks[name] = {"passed": False, "error": f"{type(exc).__name__}: {exc}"}
    failures = [name for name, check in results["checks"].items() if not check.get("passed", True)]
    results["meta"]["wall_s"] = round(time.monotonic() - started, 1)
    results["passed"] = not failures
    write_gpu_results(results, config.out_dir)
    if failures:
        details = "; ".join(f"{n}: {results['checks'][n].get('error', 'out of bounds')}" for n in failures)
        raise GpuCheckError(f"GPU checks failed ({details}). See {config.out_dir / 'gpu_results.md'}.")
    return results


def environment() -> dict[str, Any]:
    """What the figures were measured with: GPU, driver, ONNX Runtime build and providers, torch."""
    import onnxruntime as ort

    env: dict[str, Any] = {"python": sys.version.split()[0], "onnxruntime": ort.__version__,
                           "onnxruntime_available_providers": ort.get_available_providers(), "gpus": None}
    smi = shutil.which("nvidia-smi")
    if smi:
        query = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30)
        env["gpus"] = query.stdout.strip().splitlines() if query.returncode == 0 else query.stderr.strip()[:300]
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.version.cuda
        env["torch_cuda_available"] = torch.cuda.is_available()
    except ImportError:
        env["torch"] = None
    return env


def _package(model: Path | None) -> Any:
    from rohde.core.model_package import load_model_package
    from rohde.server.settings import default_models_dir

    return load_model_package(model or default_models_dir() / "rohde-default")


def engines(package: Any) -> tuple[Any, Any]:
    """(the server's engine on CUDA, refused unless its session really runs on CUDA; the same on CPU)."""
    from rohde.server.inference import InferenceEngine

    gpu = InferenceEngine(package, providers=[CUDA, CPU], require_gpu=True)
    cpu = InferenceEngine(package, providers=[CPU])
    logger.info("ONNX Runtime session providers: %s (CUDA really in use).", gpu.session.get_providers())
    return gpu, cpu


def simulated_windows(package: Any, n_windows: int, *, seed: int = 0) -> np.ndarray:
    """`(n_windows, C, W)` model inputs as the server prepares them (causal filter, windows, normalisation)
    from simulated EMG of the package's layout and rate: clean, contact-artifact and loose-contact trials."""
    from rohde.core.preprocessing import filter_recording
    from rohde.core.windows import extract_windows, window_ends
    from rohde.simulation.simulator import SimulatorConfig, simulate_recording

    meta = package.metadata
    sim = SimulatorConfig(fs_hz=meta.fs_hz, layout=package.layout, rest_s=0.5, gesture_s=1.0, ramp_s=0.15,
                          repetitions=1)
    hop = package.windows.hop_samples(meta.fs_hz)
    parts = []
    for trial, condition in enumerate(("clean", "CA", "LC"), start=1):
        recording = simulate_recording(config=sim, subject=1, session=3, trial=trial, condition=condition, seed=seed)
        filtered = package.normalization.apply(filter_recording(recording.samples, package.preprocessing))
        parts.append(extract_windows(filtered, window_ends(recording.n_samples, meta.window_samples, hop),
                                     meta.window_samples))
    windows = np.concatenate(parts)
    if len(windows) < n_windows:
        raise GpuCheckError(f"The simulation gave {len(windows)} windows; {n_windows} were asked for.")
    pick = np.random.default_rng(seed).choice(len(windows), size=n_windows, replace=False)
    return np.ascontiguousarray(windows[np.sort(pick)])


Runner = Callable[[np.ndarray], np.ndarray]


def parity(run_a: Runner, run_b: Runner, windows: np.ndarray, *, tolerance: float, batch: int = 32) -> dict[str, Any]:
    """Max |p_a - p_b| of the probabilities over `windows` in batches, and how often the argmax agrees."""
    a = np.concatenate([run_a(windows[i : i + batch]) for i in range(0, len(windows), batch)])
    b = np.concatenate([run_b(windows[i : i + batch]) for i in range(0, len(windows), batch)])
    max_abs = float(np.max(np.abs(a - b)))
    return {"passed": bool(max_abs <= tolerance), "n_windows": len(windows), "batch": batch,
            "max_abs_diff": max_abs, "mean_abs_diff": float(np.mean(np.abs(a - b))), "tolerance": tolerance,
            "argmax_agreement": float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))}


def latency(run: Runner, windows: np.ndarray, *, runs: int, batches: tuple[int, ...] = (1, 32)) -> dict[str, Any]:
    """Wall time of `run` (numpy in, numpy out: the copies to and from the GPU included, as in the server)
    per call of 1 and of 32 windows: median, p99, and per window."""
    rows = {}
    for b in batches:
        x = windows[:b]
        for _ in range(10):
            run(x)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - t)
        median = statistics.median(times)
        p99 = float(np.percentile(times, 99))
        rows[str(b)] = {"median_ms": round(median * 1000, 4), "p99_ms": round(p99 * 1000, 4),
                        "median_ms_per_window": round(median * 1000 / b, 4), "runs": runs}
    return rows


def _bench_sections(config: GpuCheckConfig, *, gpu: bool = True) -> dict[str, Any]:
    """`rohde bench --gpu --sections inference,latency`, stored under the `gpu` label of results.json
    (`gpu=False` runs the same on CPU under the label `gpu-check-cpu`, to try this code without a GPU)."""
    from rohde.bench.config import BenchConfig
    from rohde.bench.runner import run_bench

    bench = BenchConfig(model=config.model, out_dir=config.out_dir, sections=("inference", "latency"), gpu=gpu,
                        latency_streams=config.bench_streams, capacity_probes=0, step_s=config.bench_step_s,
                        inference_s=2.0, label="gpu" if gpu else "gpu-check-cpu",
                        command=f"{config.command} (bench sections inference,latency{' --gpu' if gpu else ''})")
    results = run_bench(bench)
    inference, lat = results["inference"], results["latency"]
    providers = {inference["provider"], inference["served_package_provider"], *lat["server_providers"]}
    return {"passed": providers == {CUDA if gpu else CPU}, "providers": sorted(providers),
            "inference_rows": inference["rows"], "ort_vs_torch_parity_max_abs": inference["parity_max_abs"],
            "latency_steps": [{"n_streams": s["n_streams"], "e2e_latency_ms": s["e2e_latency_ms"],
                               "realtime_ok": s["realtime_ok"], "provider": s.get("provider")} for s in lat["steps"]],
            "capacity_streams": lat["capacity_streams"], "stage_costs": lat["stage_costs"]}


def _train_tiny_on_cuda(config: GpuCheckConfig, *, device: str = "cuda") -> dict[str, Any]:
    """`rohde train` with configs/tiny.json and trainer.device "cuda" (GAN and CNN) on two small simulated
    sessions; the trainer refuses "cuda" when torch has no CUDA device (`device="cpu"` tries this code
    without a GPU)."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise GpuCheckError(f"torch {torch.__version__} sees no CUDA device: install a CUDA build of torch.")
    from rohde.simulation.simulator import SimulatorConfig, simulate_recording

    with tempfile.TemporaryDirectory(prefix="rohde-gpu-train-") as tmp:
        root = Path(tmp)
        data = root / "data"
        data.mkdir()
        sim = SimulatorConfig(fs_hz=1000.0, layout="2x4x4", gestures=("no_movement", "hand_close", "hand_open"),
                              rest_s=0.6, gesture_s=1.0, ramp_s=0.1, repetitions=1)
        for session in (1, 2):
            for trial, condition in enumerate(("clean", "clean", "clean", "CA", "LC"), start=1):
                rec = simulate_recording(config=sim, subject=1, session=session, trial=trial, condition=condition)
                rec.save(data / f"s01_{session}_{trial}_{condition}")
        tiny = json.loads((REPO_ROOT / "configs" / "tiny.json").read_text())
        tiny["trainer"]["device"] = device
        config_path = root / "tiny-cuda.json"
        config_path.write_text(json.dumps(tiny))
        out = root / "model"
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "rohde.cli", "train", "--data", str(data), "--out", str(out),
                               "--config", str(config_path), "--work-dir", str(root / "work"), "--no-progress"],
                              capture_output=True, text=True, timeout=1800)
        wall = time.monotonic() - started
        if done.returncode != 0:
            raise GpuCheckError(f"rohde train on CUDA exited with {done.returncode}: {done.stderr[-1500:]}")
        report = json.loads((out / "report" / "report.json").read_text())
    rohde = report["models"]["rohde"]
    return {"passed": True, "device": torch.cuda.get_device_name(0) if device == "cuda" else device,
            "wall_s": round(wall, 1),
            "accuracy": {cond: rohde[cond]["accuracy"] for cond in rohde},
            "export_parity_max_abs_diff": report["export"]["parity_max_abs_diff"]}


def write_gpu_results(results: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out_dir / "gpu_results.md").write_text(render_gpu_markdown(results))


def render_gpu_markdown(results: dict[str, Any]) -> str:
    meta, checks = results["meta"], results["checks"]
    env = meta["environment"]
    lines = ["# GPU checks", "", "Generated by `bench/gpu_check.sh` (`python -m rohde.bench gpu`) from "
             "`gpu_results.json`; do not edit by hand.", "",
             f"- date: {meta['date_utc']}; command: `{meta['command']}`; wall time {meta.get('wall_s')} s",
             f"- GPU: {env.get('gpus')}; onnxruntime {env['onnxruntime']} "
             f"(providers offered: {', '.join(env['onnxruntime_available_providers'])}); torch {env.get('torch')} "
             f"(CUDA {env.get('torch_cuda')}, available: {env.get('torch_cuda_available')})",
             f"- verdict: **{'all checks passed' if results['passed'] else 'FAILED'}**", ""]
    for name, check in checks.items():
        status = "passed" if check.get("passed", True) else "FAILED"
        lines.append(f"## {name}: {status}")
        lines.append("")
        if "error" in check:
            lines += [f"Error: {check['error']}", ""]
            continue
        if name == "provider":
            lines += [f"Session providers of the shipped model: {check['session_providers']}.", ""]
        elif name == "parity":
            lines += [f"{check['n_windows']} simulated windows (clean, CA, LC) in batches of {check['batch']}: "
                      f"max |p_cuda - p_cpu| = {check['max_abs_diff']:.2e} (tolerance {check['tolerance']:.0e}), "
                      f"mean {check['mean_abs_diff']:.2e}; argmax agreement {check['argmax_agreement']:.4f}.", ""]
        elif name == "latency":
            lines += ["| provider | windows per call | median ms | p99 ms | median ms per window |",
                      "|---|---|---|---|---|"]
            for provider, rows in check.items():
                for b, r in rows.items():
                    lines.append(f"| {provider} | {b} | {r['median_ms']} | {r['p99_ms']} | "
                                 f"{r['median_ms_per_window']} |")
            lines += ["", "Wall time of the server's engine call (numpy in and out, host-device copies included).", ""]
        elif name == "bench":
            lines += [f"Providers: {check['providers']}; capacity {check['capacity_streams']} streams; ORT vs torch "
                      f"parity {check['ort_vs_torch_parity_max_abs']:.2e}. Details: `RESULTS.md`, label `gpu`.", ""]
        elif name == "training":
            lines += [f"configs/tiny.json on {check['device']}: {check['wall_s']} s; accuracy {check['accuracy']}; "
                      f"export parity {check['export_parity_max_abs_diff']:.2e}.", ""]
    return "\n".join(lines) + "\n"
