"""Server test fixtures: a synthetic gesture recording, tiny ONNX model packages fitted on it, child
processes and real LSL outlets in subprocesses.

The model is a real multinomial logistic regression (fitted with numpy on the windows of the
recording) on log mean-square per channel, written as the benchmark's tiny ONNX package, so
different gestures of the recording really map to different classes.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from rohde.bench.tiny_package import build_tiny_package
from rohde.core.layouts import grid_layout
from rohde.core.preprocessing import Normalization, PreprocessingConfig, filter_recording
from rohde.core.recording import Recording
from rohde.core.windows import WindowConfig, extract_windows, window_ends
from rohde.server.lsl_inlet import import_pylsl
from rohde.server.processes import Child, ChildGroup, unique_id
from rohde.server.settings import default_lsl_config

REPO_ROOT = Path(__file__).resolve().parents[2]
LSL_CONFIG = default_lsl_config()
ROHDE = str(Path(sys.executable).with_name("rohde"))

FS_HZ = 1000.0
N_CHANNELS = 16
GESTURES = ("rest", "g1", "g2", "g3")
SEGMENT_S = 2.0
WINDOW_MS, HOP_MS = 200.0, 50.0


def synthetic_recording(*, seed: int = 0, cycles: int = 2, n_channels: int = N_CHANNELS,
                        fs_hz: float = FS_HZ) -> Recording:
    """Gestures in turn, `SEGMENT_S` each; gesture g > 0 raises the EMG of channel group g."""
    rng = np.random.default_rng(seed)
    seg = int(SEGMENT_S * fs_hz)
    n = seg * len(GESTURES) * cycles
    labels = np.repeat(np.tile(np.arange(len(GESTURES)), cycles), seg).astype(np.int16)
    amplitude = np.full((n, n_channels), 5.0)
    group = n_channels // (len(GESTURES) - 1)
    for g in range(1, len(GESTURES)):
        rows = labels == g
        amplitude[np.ix_(rows, np.arange((g - 1) * group, g * group))] = 40.0
    noise = rng.standard_normal((n, n_channels))
    samples = (noise * amplitude + 300.0).astype(np.float32)  # with an electrode DC offset
    layout = grid_layout(1, 4, n_channels // 4, name=f"1x4x{n_channels // 4}")
    return Recording(samples=samples, fs_hz=fs_hz, layout=layout, labels=labels, gesture_names=GESTURES)


def windows_and_labels(recording: Recording, preprocessing: PreprocessingConfig, normalization: Normalization | None,
                       *, hop: int) -> tuple[np.ndarray, np.ndarray, Normalization]:
    """Windows every `hop` samples. A live stream starts at any sample, so its windows fall anywhere
    relative to the gesture changes: fitting and evaluating on a fine hop covers every such phase."""
    filtered = filter_recording(recording.samples, preprocessing)
    norm = normalization or Normalization.fit(filtered)
    w = WindowConfig(WINDOW_MS, HOP_MS).window_samples(recording.fs_hz)
    ends = window_ends(recording.n_samples, w, hop)
    windows = extract_windows(norm.apply(filtered), ends, w)
    return windows, recording.labels[ends - 1], norm


def log_power(windows: np.ndarray) -> np.ndarray:
    return np.log(np.mean(windows.astype(np.float64) ** 2, axis=2) + 1e-6)


def fit_softmax(features: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by gradient descent; returns W (F, K) and b (K,)."""
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-6
    x = (features - mean) / std
    onehot = np.eye(n_classes)[labels]
    weights = np.zeros((x.shape[1], n_classes))
    bias = np.zeros(n_classes)
    for _ in range(300):
        logits = x @ weights + bias
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad = p - onehot
        weights -= 0.5 * (x.T @ grad / len(x) + 1e-3 * weights)
        bias -= 0.5 * grad.mean(axis=0)
    # Fold the feature standardisation into the weights: (f - mean) / std @ W = f @ W' + b'.
    w_folded = weights / std[:, None]
    return w_folded, bias - mean @ w_folded


def log_power_at(normalized: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """log mean-square per channel of the windows ending at `ends`, from `(n_samples, n_channels)`,
    without materialising the windows (what the ONNX graph computes, for long recordings)."""
    cumulative = np.concatenate([np.zeros((1, normalized.shape[1])),
                                 np.cumsum(normalized.astype(np.float64) ** 2, axis=0)])
    return np.log((cumulative[ends] - cumulative[ends - window]) / window + 1e-6)


def simulator_model(target: Path, *, seed: int, train_s: float, test_s: float) -> float:
    """Fit the tiny model on clean simulator data and write it to `target`; returns its offline
    window accuracy on a clean stretch of another seed (usable windows only, every 10 samples)."""
    from rohde.simulation.simulator import LiveSimulator

    def stretch(sim_seed: int, seconds: float) -> tuple[Recording, np.ndarray]:
        sim = LiveSimulator(seed=sim_seed, schedule=("clean",), condition_s=seconds)
        chunk = sim.read(int(seconds * sim.fs_hz))
        rec = Recording(samples=chunk.samples, fs_hz=sim.fs_hz, layout=sim.layout, labels=chunk.labels,
                        gesture_names=sim.gesture_names)
        return rec, chunk.labels

    train, _ = stretch(seed, train_s)
    preprocessing = PreprocessingConfig(fs_hz=train.fs_hz)
    filtered = filter_recording(train.samples, preprocessing)
    norm = Normalization.fit(filtered)
    window = WindowConfig(WINDOW_MS, HOP_MS).window_samples(train.fs_hz)
    ends = window_ends(train.n_samples, window, 10)
    labels = train.labels[ends - 1]
    usable = labels >= 0
    features = log_power_at(norm.apply(filtered), ends, window)
    weights, bias = fit_softmax(features[usable], labels[usable], len(train.gesture_names))
    build_package(target, train, name="sim-tiny", version="1", weights=weights, bias=bias, normalization=norm,
                  preprocessing=preprocessing)
    test, _ = stretch(seed + 1, test_s)
    test_filtered = norm.apply(filter_recording(test.samples, preprocessing))
    test_ends = window_ends(test.n_samples, window, 10)
    test_labels = test.labels[test_ends - 1]
    keep = test_labels >= 0
    logits = log_power_at(test_filtered, test_ends, window) @ weights + bias
    return float(np.mean(np.argmax(logits[keep], axis=1) == test_labels[keep]))


@dataclass(frozen=True)
class ModelSet:
    models_dir: Path
    recording: Recording
    offline_accuracy: float  # per-window accuracy of "good" on the recording, offline


def build_package(target: Path, recording: Recording, *, name: str, version: str,
                  weights: np.ndarray, bias: np.ndarray, normalization: Normalization,
                  preprocessing: PreprocessingConfig, window_ms: float = WINDOW_MS) -> None:
    """The tiny log-power model with fitted `weights` and `bias`, for the recording's layout and labels."""
    build_tiny_package(target, layout=recording.layout, labels=recording.gesture_names, fs_hz=recording.fs_hz,
                       weights=weights, bias=bias, normalization=normalization, preprocessing=preprocessing,
                       window_ms=window_ms, hop_ms=HOP_MS, name=name, version=version,
                       created_utc="2026-01-01T00:00:00Z", training_data={"source": "synthetic test data"})


@pytest.fixture(scope="session")
def model_set(tmp_path_factory: pytest.TempPathFactory) -> ModelSet:
    """models/good, models/good2 (same signal chain, other weights), models/long (300 ms windows),
    models/broken (bad checksum)."""
    root = tmp_path_factory.mktemp("models")
    recording = synthetic_recording(seed=0, cycles=2)
    preprocessing = PreprocessingConfig(fs_hz=FS_HZ)
    windows, labels, norm = windows_and_labels(recording, preprocessing, None, hop=10)
    weights, bias = fit_softmax(log_power(windows), labels, len(GESTURES))
    build_package(root / "good", recording, name="good", version="1", weights=weights, bias=bias,
                  normalization=norm, preprocessing=preprocessing)
    build_package(root / "good2", recording, name="good2", version="2", weights=weights * 1.01, bias=bias,
                  normalization=norm, preprocessing=preprocessing)
    # Another window length: a swap to it restarts the filter and windows of every stream.
    build_package(root / "long", recording, name="long", version="1", weights=weights, bias=bias,
                  normalization=norm, preprocessing=preprocessing, window_ms=300.0)
    shutil.copytree(root / "good", root / "broken")
    (root / "broken" / "model.onnx").write_bytes((root / "good" / "model.onnx").read_bytes() + b"\0")
    # Offline evaluation of "good" on a recording the live tests replay (another seed).
    test_recording = synthetic_recording(seed=1, cycles=1)
    test_windows, test_labels, _ = windows_and_labels(test_recording, preprocessing, norm, hop=5)
    logits = log_power(test_windows) @ weights + bias
    accuracy = float(np.mean(np.argmax(logits, axis=1) == test_labels))
    return ModelSet(root, test_recording, accuracy)


@pytest.fixture(scope="session")
def simulator_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder whose package `good` is the tiny model fitted on 30 s of clean simulator data."""
    root = tmp_path_factory.mktemp("sim-models")
    simulator_model(root / "good", seed=10, train_s=30.0, test_s=2.0)
    return root


@pytest.fixture
def processes() -> Iterator[ChildGroup]:
    """Child processes started by a test (`processes.start(...)`); always stopped at its end."""
    with ChildGroup() as group:
        yield group


@dataclass(frozen=True)
class RunningOutlet:
    name: str
    source_id: str
    child: Child


def wait_until_resolvable(child: Child, name: str, source_id: str, timeout_s: float = 60.0) -> None:
    """Return once the outlet `name` / `source_id` of `child` answers an LSL query; fail if it dies first.
    The bound is generous: a child that imports numpy, scipy and pylsl on a loaded 2-core machine is slow to start."""
    pylsl = import_pylsl(LSL_CONFIG)
    deadline = time.monotonic() + timeout_s
    while not pylsl.resolve_bypred(f"name='{name}' and source_id='{source_id}'", 1, 0.5):
        if child.process.poll() is not None:
            pytest.fail(f"{child.describe()} exited with code {child.process.returncode}:\n{child.log_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"The outlet {name!r} ({source_id}) did not resolve within {timeout_s:g} s; "
                        f"its log ends with:\n{child.log_tail()}")


@pytest.fixture
def lsl_outlet(tmp_path: Path) -> Iterator[Callable[..., RunningOutlet]]:
    """A factory of real LSL outlets, each `rohde COMMAND... --name NAME --source-id SOURCE_ID` in a
    subprocess (COMMAND: `replay FILE` or `simulate ...`). `name` and `source_id` default to unique
    ones; a call returns once the stream resolves, and every outlet stops at the test's end."""
    with ChildGroup() as group:

        def start(*command: str, name: str | None = None, source_id: str | None = None) -> RunningOutlet:
            name = name or unique_id("outlet")
            source_id = source_id or unique_id(name)
            child = group.start([ROHDE, *command, "--name", name, "--source-id", source_id],
                                log=tmp_path / f"outlet-{len(group.children)}-{source_id}.log")
            wait_until_resolvable(child, name, source_id)
            return RunningOutlet(name, source_id, child)

        yield start


def wait_for(predicate, timeout_s: float, interval_s: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"condition not met within {timeout_s} s")


def wait_until_ready(base_url: str, timeout_s: float = 40.0) -> None:
    """Wait for a started `rohde serve` to answer 200 on /ready."""
    import httpx

    def is_ready() -> bool:
        try:
            return httpx.get(f"{base_url}/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(is_ready, timeout_s, 0.2)
