"""`rohde bench`: side-by-side performance figures of the serving path, written to `bench/`.

Every figure comes from real parts: pylsl outlets in their own processes, the real server
(`rohde serve` in a subprocess), real WebSocket clients, ONNX Runtime and PyTorch on the same
weights, MNE-LSL's `StreamLSL` reading the same outlet as our ingestion. Sections:

- `inference`: ONNX Runtime against PyTorch eager, per window and batched (1-32 windows).
- `ingestion`: CPU seconds per stream-second of our ingestion against MNE-LSL and plain pylsl loops.
- `latency`: decision latency (outlet push of a window's last sample -> WebSocket client receipt)
  at several stream counts, its split into stages, server CPU and memory, and the capacity (largest
  stream count served without lost samples and with p99 under the limit).
- `soak`: resident memory of the server over a long run at a fixed stream count.

Timings on a shared machine vary: the figures are medians and percentiles of one run, reported
with the machine, the command and the date, and never used as pass/fail checks.

Internal roles (outlet process, ingestion consumers) run through `python -m rohde.benchmarks ROLE`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from rohde.core.errors import ConfigError, RohdeError
from rohde.server.settings import default_lsl_config, default_models_dir

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
LSL_CONFIG = default_lsl_config()
DEFAULT_MODEL = default_models_dir() / "rohde-default"
SECTIONS = ("inference", "ingestion", "latency", "soak")
P99_LIMIT_MS = 50.0  # capacity criterion from the specification
# Ingestion readers compared. pylsl_wait: the pylsl + sosfilt reader, but waiting in liblsl for the
# next chunk (`pull_chunk(timeout, min_samples=1)`) instead of polling every 1 ms.
INGEST_KINDS = ("ours", "mne_lsl", "pylsl_sosfilt", "pylsl_plain", "pylsl_wait")


@dataclass(frozen=True)
class BenchConfig:
    """What one `rohde bench` run measures and for how long."""

    model: Path | None = None  # model package folder; None: models/rohde-default, else a random-weight CNN built here
    out_dir: Path = REPO_ROOT / "bench"  # results.json and RESULTS.md go here
    sections: tuple[str, ...] = SECTIONS  # which sections to run
    latency_streams: tuple[int, ...] = (1, 8, 32)  # stream counts with a full latency table
    capacity_probes: int = 2  # further stream counts tried, bisecting between the largest pass and smallest failure
    step_s: float = 25.0  # measured seconds per stream count (after the warm-up)
    warmup_s: float = 3.0  # seconds of decisions ignored after every stream is connected
    soak_s: float = 600.0  # memory soak duration
    soak_streams: int = 8  # streams during the soak
    chunk_ms: float = 10.0  # the outlets push a chunk this often
    outlets_per_process: int = 8  # outlets sharing one outlet process
    ingest_s: float = 20.0  # measured seconds per ingestion consumer
    ingest_kinds: tuple[str, ...] = INGEST_KINDS  # ingestion readers compared
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # inference batch sizes
    inference_s: float = 2.0  # time spent timing each (engine, batch size) cell
    gpu: bool = False  # run inference and latency with the CUDA provider (and IO binding)
    pull_interval_ms: float | None = None  # server setting for the latency runs; None = the server default
    quality_interval_s: float | None = None  # server setting for the latency runs; None = the server default
    label: str = ""  # key of this run in results.json; default "cpu" or "gpu"
    merge: bool = False  # replace only the measured sections of the stored run with this label
    command: str = ""  # the command line, recorded with the figures

    def __post_init__(self) -> None:
        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown:
            raise ConfigError(f"Unknown bench sections {unknown}; choose from {list(SECTIONS)}.")
        if min(self.latency_streams + (self.soak_streams,), default=1) < 1 or self.capacity_probes < 0:
            raise ConfigError("Stream counts must be at least 1 and capacity_probes at least 0.")
        if self.step_s <= 0 or self.soak_s <= 0 or self.ingest_s <= 0 or self.chunk_ms <= 0:
            raise ConfigError("step_s, soak_s, ingest_s and chunk_ms must be positive.")
        bad_kinds = [k for k in self.ingest_kinds if k not in INGEST_KINDS]
        if bad_kinds:
            raise ConfigError(f"Unknown ingestion readers {bad_kinds}; choose from {list(INGEST_KINDS)}.")


# ---- machine and process facts ------------------------------------------------------------------

def machine_description() -> dict[str, Any]:
    """CPU, memory, load and library versions of this machine, recorded beside every figure."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
    except (OSError, IndexError, ValueError):
        mem_kb = 0
    versions: dict[str, str] = {}
    for module in ("numpy", "scipy", "onnxruntime", "pylsl", "torch", "mne_lsl", "fastapi", "uvicorn", "websockets"):
        try:
            versions[module] = str(__import__(module).__version__)
        except Exception:  # not installed here: recorded as missing
            versions[module] = "missing"
    return {
        "platform": platform.platform(), "cpu": cpu, "logical_cpus": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024**2, 1), "load_avg_1_5_15": list(os.getloadavg()),
        "python": platform.python_version(), "versions": versions,
    }


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def percentiles_ms(values_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds of `values_s` (seconds); NaN when empty."""
    if len(values_s) == 0:
        return {"p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan, "n": 0}
    arr = np.asarray(values_s, dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3),
            "max": round(float(arr.max()), 3), "n": int(arr.size)}


def lsl_env() -> dict[str, str]:
    """The environment of every child: loopback-only LSL, no inherited server config."""
    env = dict(os.environ)
    env["LSLAPICFG"] = str(LSL_CONFIG)
    env.pop("ROHDE_CONFIG", None)
    return env


@contextmanager
def child(cmd: Sequence[str], *, log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess that is always terminated (then killed) when the block ends."""
    with log.open("wb") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, env=env or lsl_env())
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout_s: float, log: Path) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        if proc.poll() is not None:
            raise RohdeError(f"A benchmark child exited with code {proc.returncode}; see {log}:\n"
                             + log.read_text()[-2000:])
        time.sleep(0.05)
    raise RohdeError(f"A benchmark child did not write {path} within {timeout_s:g} s; see {log}.")


# ---- the model -----------------------------------------------------------------------------------

def resolve_model(config: BenchConfig, workdir: Path) -> tuple[Path, str]:
    """The package to serve and where it came from: --model, models/rohde-default, or a CNN built here."""
    source = config.model if config.model is not None else DEFAULT_MODEL
    if config.model is not None and not (config.model / "metadata.json").is_file():
        raise ConfigError(f"--model {str(config.model)!r} is not a model package folder (no metadata.json).")
    if (source / "metadata.json").is_file():
        from rohde.core.model_package import load_model_package

        # A private copy: a training run that rewrites the package meanwhile cannot change what is measured.
        copy = workdir / "models" / source.name
        shutil.copytree(source, copy)
        meta = load_model_package(copy).metadata
        return copy, (f"package {source} ({meta.name} v{meta.version}, created {meta.created_utc}, "
                      f"onnx sha256 {meta.onnx_sha256[:12]})")
    path = build_random_cnn_package(workdir / "models" / "bench-cnn")
    return path, "default-architecture CNN with random weights (no trained package was available)"


def build_random_cnn_package(target: Path) -> Path:
    """A valid 192-channel 2048 Hz package of the default CNN architecture with random weights
    (inference cost does not depend on the weights). Needs the training extra (torch)."""
    import torch

    from rohde.core.gestures import DEFAULT_GESTURES
    from rohde.core.layouts import default_layout
    from rohde.core.preprocessing import Normalization, PreprocessingConfig
    from rohde.core.windows import WindowConfig
    from rohde.training.cnn import RohdeCNN
    from rohde.training.config import CNNConfig
    from rohde.training.export import export_package

    layout = default_layout()
    preprocessing = PreprocessingConfig(fs_hz=2048.0)
    windows = WindowConfig(200.0, 50.0)
    torch.manual_seed(0)
    model = RohdeCNN(layout=layout, n_classes=len(DEFAULT_GESTURES), fs_hz=preprocessing.fs_hz,
                     band_hz=preprocessing.effective_band_hz, config=CNNConfig()).eval()
    parity = np.random.default_rng(0).standard_normal((4, layout.n_channels, windows.window_samples(2048.0)))
    export_package(model, target, name="bench-cnn", version="0", labels=list(DEFAULT_GESTURES), layout=layout,
                   preprocessing=preprocessing, normalization=Normalization(scale_uv=(20.0,) * layout.n_channels),
                   windows=windows, parity_windows=parity.astype(np.float32),
                   training_data={"source": "none: random weights for benchmarking"}, metrics={})
    return target


def build_tiny_package(target: Path, *, n_channels: int = 16, fs_hz: float = 1000.0) -> Path:
    """A small valid package (log mean-square per channel -> linear -> softmax, random weights) for
    smoke runs of the bench harness; no torch needed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from rohde.core.layouts import grid_layout
    from rohde.core.model_package import ModelMetadata, sha256_of, write_metadata
    from rohde.core.preprocessing import Normalization, PreprocessingConfig
    from rohde.core.windows import WindowConfig

    labels = ["rest", "g1", "g2", "g3"]
    layout = grid_layout(1, 4, n_channels // 4, name=f"1x4x{n_channels // 4}")
    windows = WindowConfig(200.0, 50.0)
    window = windows.window_samples(fs_hz)
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Mul", ["emg", "emg"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[2], keepdims=0),
        helper.make_node("Add", ["ms", "eps"], ["ms_eps"]),
        helper.make_node("Log", ["ms_eps"], ["logp"]),
        helper.make_node("MatMul", ["logp", "W"], ["lin"]),
        helper.make_node("Softmax", ["lin"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_bench",
        [helper.make_tensor_value_info("emg", TensorProto.FLOAT, ["batch", n_channels, window])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(labels)])],
        initializer=[numpy_helper.from_array(rng.standard_normal((n_channels, len(labels))).astype(np.float32), "W"),
                     numpy_helper.from_array(np.array(1e-6, dtype=np.float32), "eps")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    target.mkdir(parents=True, exist_ok=True)
    (target / "model.onnx").write_bytes(model.SerializeToString())
    meta = ModelMetadata(
        name=target.name, version="0", created_utc=datetime.now(UTC).isoformat(timespec="seconds"), labels=labels,
        fs_hz=fs_hz, n_channels=n_channels, layout=layout.to_dict(), channel_map=layout.channel_map(),
        window_ms=windows.window_ms, hop_ms=windows.hop_ms, window_samples=window,
        preprocessing=PreprocessingConfig(fs_hz=fs_hz).to_dict(),
        normalization=Normalization(scale_uv=(20.0,) * n_channels).to_dict(), input_name="emg",
        input_shape=["batch", n_channels, window], output_name="probabilities", output_shape=["batch", len(labels)],
        training_data={"source": "none: random weights for benchmark smoke runs"}, metrics={},
        onnx_sha256=sha256_of(target / "model.onnx"),
    )
    write_metadata(target, meta)
    return target


# ---- outlet process --------------------------------------------------------------------------------

def run_outlets(*, name: str, source_ids: Sequence[str], n_channels: int, fs_hz: float, chunk_ms: float,
                ready_file: Path, log_file: Path, seed: int = 0) -> None:
    """Push noise on one outlet per source id in real time until SIGTERM; log every push time.

    Sample i carries the LSL time t0 + i / fs_hz; the chunk holding samples [k*c, (k+1)*c) is pushed
    as soon as its last sample is due, and its push moment (LSL local clock) is recorded per outlet,
    so a decision's latency can be measured from the push of its window's last sample.
    """
    from rohde.server.lsl_inlet import import_pylsl

    pylsl = import_pylsl(LSL_CONFIG)
    chunk = max(1, int(round(chunk_ms * fs_hz / 1000.0)))
    rng = np.random.default_rng(seed)
    n_loop = chunk * max(1, int(fs_hz // chunk))  # about one second of noise, looped
    data = (rng.standard_normal((n_loop, n_channels)) * 20.0).astype(np.float32)
    outlets = []
    for sid in source_ids:
        info = pylsl.StreamInfo(name, "EMG", n_channels, fs_hz, pylsl.cf_float32, sid)
        channels = info.desc().append_child("channels")
        for c in range(n_channels):
            ch = channels.append_child("channel")
            ch.append_child_value("label", f"EMG{c + 1}")
            ch.append_child_value("unit", "microvolts")
            ch.append_child_value("type", "EMG")
        outlets.append(pylsl.StreamOutlet(info, chunk))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    pushes: list[list[float]] = [[] for _ in outlets]
    t0 = pylsl.local_clock() + 0.05
    ready_file.write_text(json.dumps({"t0": t0, "chunk_samples": chunk, "fs_hz": fs_hz,
                                      "source_ids": list(source_ids)}))
    k = 0
    while not stop.is_set():
        due = t0 + (k + 1) * chunk / fs_hz
        delay = due - pylsl.local_clock()
        if delay > 0:
            time.sleep(delay)
        start = (k * chunk) % n_loop
        block = data[start : start + chunk]
        stamp = t0 + ((k + 1) * chunk - 1) / fs_hz  # LSL time of the chunk's last sample
        for j, outlet in enumerate(outlets):
            pushes[j].append(pylsl.local_clock())
            outlet.push_chunk(block, stamp, True)
        k += 1
    time.sleep(0.5)  # keep the outlets open until liblsl has sent the last chunks to every inlet
    np.savez(log_file, push_clock=np.asarray(pushes, dtype=np.float64), t0=t0, chunk_samples=chunk, fs_hz=fs_hz)


@dataclass
class OutletGroup:
    """Outlet processes serving `n_streams` streams named `name`."""

    name: str
    source_ids: list[str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ready: list[dict[str, Any]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)


@contextmanager
def outlet_group(*, n_streams: int, n_channels: int, fs_hz: float, chunk_ms: float, per_process: int,
                 workdir: Path) -> Iterator[OutletGroup]:
    tag = uuid.uuid4().hex[:8]
    group = OutletGroup(name=f"RoHDE-Bench-{tag}", source_ids=[f"bench-{tag}-{i}" for i in range(n_streams)])
    with tempfile.TemporaryDirectory(dir=workdir) as tmp, _ExitStackLite() as stack:
        for p, first in enumerate(range(0, n_streams, per_process)):
            sids = group.source_ids[first : first + per_process]
            ready, log, out = Path(tmp) / f"ready{p}.json", Path(tmp) / f"push{p}.npz", Path(tmp) / f"outlet{p}.log"
            cmd = [sys.executable, "-m", "rohde.benchmarks", "outlet", "--name", group.name,
                   "--source-ids", ",".join(sids), "--n-channels", str(n_channels), "--fs-hz", str(fs_hz),
                   "--chunk-ms", str(chunk_ms), "--ready-file", str(ready), "--log-file", str(log), "--seed", str(p)]
            proc = stack.enter(child(cmd, log=out))
            group.procs.append(proc)
            group.logs.append(log)
            group.ready.append(json.loads(wait_for_file(ready, proc, 30.0, out)))
        yield group


class _ExitStackLite:
    """A tiny exit stack for context managers that must close in reverse order."""

    def __init__(self) -> None:
        self._exits: list[Any] = []

    def enter(self, cm: Any) -> Any:
        value = cm.__enter__()
        self._exits.append(cm)
        return value

    def __enter__(self) -> _ExitStackLite:
        return self

    def __exit__(self, *exc: object) -> None:
        while self._exits:
            self._exits.pop().__exit__(None, None, None)


def stop_outlets(group: OutletGroup) -> list[np.ndarray]:
    """Stop the outlet processes and read their push logs: one `(n_outlets, n_chunks)` array each."""
    for proc in group.procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in group.procs:
        proc.wait(timeout=20)
    return [np.load(log)["push_clock"] for log in group.logs]


# ---- server and clients -----------------------------------------------------------------------------

@dataclass
class ServerHandle:
    proc: subprocess.Popen[bytes]
    url: str
    ws_url: str


def server_overrides(config: BenchConfig) -> dict[str, str]:
    """`ROHDE_*` settings the latency and soak servers run with (only those the bench changes)."""
    env: dict[str, str] = {}
    if config.gpu:
        env["ROHDE_PROVIDERS"] = "CUDAExecutionProvider,CPUExecutionProvider"
    if config.pull_interval_ms is not None:
        env["ROHDE_PULL_INTERVAL_MS"] = str(config.pull_interval_ms)
    if config.quality_interval_s is not None:
        env["ROHDE_QUALITY_INTERVAL_S"] = str(config.quality_interval_s)
    return env


@contextmanager
def running_server(*, model: Path, stream_name: str, max_streams: int, workdir: Path,
                   overrides: dict[str, str]) -> Iterator[ServerHandle]:
    port_file = workdir / f"port-{uuid.uuid4().hex[:6]}"
    log = workdir / f"server-{stream_name}.log"
    env = lsl_env()
    env.update(overrides)
    cmd = [sys.executable, "-m", "rohde.cli", "serve", "--port", "0", "--port-file", str(port_file),
           "--models-dir", str(model.parent), "--model", model.name, "--stream-name", stream_name,
           "--max-streams", str(max_streams)]
    with child(cmd, log=log, env=env) as proc:
        port = int(wait_for_file(port_file, proc, 60.0, log))
        yield ServerHandle(proc, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}")


def http_json(url: str) -> Any:
    import httpx

    return httpx.get(url, timeout=10.0).json()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (only what the bench reads)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                values[key] = float(value)
            except ValueError:
                continue
    return values


def wait_connected(server: ServerHandle, source_ids: Sequence[str], timeout_s: float) -> dict[str, str]:
    """source_id -> stream_id once every stream is connected."""
    deadline = time.monotonic() + timeout_s
    wanted = set(source_ids)
    last: dict[str, str] = {}
    while time.monotonic() < deadline:
        streams = http_json(server.url + "/streams")["streams"]
        last = {s["source_id"]: s["stream_id"] for s in streams if s["state"] == "connected"}
        if wanted <= set(last):
            return {sid: last[sid] for sid in source_ids}
        time.sleep(0.25)
    raise RohdeError(f"Only {len(wanted & set(last))} of {len(wanted)} streams connected within {timeout_s:g} s.")


@dataclass
class Received:
    stream_id: str
    lsl_time: float
    recv_clock: float  # time.monotonic() (= LSL local clock) at receipt
    recv_wall: float
    server_time: float
    latency_ms: float  # the server's own processing latency (pulled -> decision ready)


async def collect_decisions(ws_url: str, stream_ids: Sequence[str], duration_s: float, pid: int,
                            sample_every_s: float = 5.0,
                            ) -> tuple[list[Received], list[tuple[float, float, float]], list[str]]:
    """One WebSocket client per stream for `duration_s`; also samples the server's (t, RSS MB, CPU s)."""
    from websockets.asyncio.client import connect

    records: list[Received] = []
    samples: list[tuple[float, float, float]] = []
    client_errors: list[str] = []
    end = time.monotonic() + duration_s

    async def client(stream_id: str) -> None:
        try:
            async with connect(f"{ws_url}/ws?stream={quote(stream_id)}", max_size=None, ping_interval=None,
                               open_timeout=30) as ws:
                while (remaining := end - time.monotonic()) > 0:
                    try:
                        raw = await asyncio.wait_for(ws.recv(), remaining)
                    except TimeoutError:
                        break
                    recv_clock, recv_wall = time.monotonic(), time.time()
                    msg = json.loads(raw)
                    if msg.get("kind") == "prediction":
                        records.append(Received(stream_id, msg["lsl_time"], recv_clock, recv_wall,
                                                msg["server_time"], msg["latency_ms"]))
        except Exception as exc:  # an overloaded server may refuse or drop a client: counted, not fatal
            logger.warning("WebSocket client of %s failed: %s", stream_id, exc)
            client_errors.append(f"{stream_id}: {type(exc).__name__}: {exc}")

    async def sampler() -> None:
        while (remaining := end - time.monotonic()) > 0:
            samples.append((time.monotonic(), proc_rss_mb(pid), proc_cpu_s(pid)))
            await asyncio.sleep(min(sample_every_s, remaining))
        samples.append((time.monotonic(), proc_rss_mb(pid), proc_cpu_s(pid)))

    await asyncio.gather(sampler(), *(client(s) for s in stream_ids))
    return records, samples, client_errors


def run_streams(config: BenchConfig, *, model: Path, meta: Any, n_streams: int, duration_s: float,
                workdir: Path, sample_every_s: float = 5.0) -> dict[str, Any]:
    """One measurement: `n_streams` outlets -> the real server -> one WebSocket client per stream."""
    with outlet_group(n_streams=n_streams, n_channels=meta.n_channels, fs_hz=meta.fs_hz, chunk_ms=config.chunk_ms,
                      per_process=config.outlets_per_process, workdir=workdir) as group, \
            running_server(model=model, stream_name=group.name, max_streams=n_streams, workdir=workdir,
                           overrides=server_overrides(config)) as server:
        ids = wait_connected(server, group.source_ids, timeout_s=30.0 + n_streams)
        records, mem, client_errors = asyncio.run(collect_decisions(
            server.ws_url, list(ids.values()), duration_s + config.warmup_s, server.proc.pid, sample_every_s))
        pushes = stop_outlets(group)
        time.sleep(0.3)  # let the server pull and window what was pushed last
        rss_end = proc_rss_mb(server.proc.pid)
        try:
            streams = {s["stream_id"]: s for s in http_json(server.url + "/streams")["streams"]}
            metrics = parse_metrics(__import__("httpx").get(server.url + "/metrics", timeout=10.0).text)
            health = http_json(server.url + "/health")
        except Exception as exc:  # an overloaded server that cannot answer has failed this step
            raise RohdeError(f"The server did not answer after the run: {exc}") from exc
    step = summarize_step(config, group=group, ids=ids, records=records, pushes=pushes, streams=streams,
                          metrics=metrics, mem=mem, rss_end=rss_end, meta=meta, health=health)
    step["client_errors"] = client_errors
    if client_errors:
        step["realtime_ok"] = False
    return step


def run_step(config: BenchConfig, *, model: Path, meta: Any, n_streams: int, duration_s: float, workdir: Path,
             sample_every_s: float = 5.0) -> dict[str, Any]:
    """`run_streams`, with a failure (streams not connected, server unresponsive) recorded as a failed step."""
    try:
        return run_streams(config, model=model, meta=meta, n_streams=n_streams, duration_s=duration_s,
                           workdir=workdir, sample_every_s=sample_every_s)
    except Exception as exc:
        logger.exception("The %d-stream run failed.", n_streams)
        nan = percentiles_ms([])
        return {"n_streams": n_streams, "failed": f"{type(exc).__name__}: {exc}", "realtime_ok": False,
                "lossless": False, "e2e_latency_ms": nan, "server_processing_ms": nan, "delivery_ms": nan,
                "server_cpu_cores": math.nan, "server_rss_mb": {"start": math.nan, "max": math.nan, "end": math.nan},
                "lost": {"missing_samples": math.nan, "gaps": math.nan, "overflows": math.nan,
                         "tail_samples_not_pulled": math.nan, "ws_dropped_messages": math.nan},
                "memory_samples": []}


def summarize_step(config: BenchConfig, *, group: OutletGroup, ids: dict[str, str], records: list[Received],
                   pushes: list[np.ndarray], streams: dict[str, Any], metrics: dict[str, float],
                   mem: list[tuple[float, float, float]], rss_end: float, meta: Any,
                   health: dict[str, Any]) -> dict[str, Any]:
    # Where each stream's pushes are: (process index, outlet index within it).
    where: dict[str, tuple[int, int]] = {}
    for p, ready in enumerate(group.ready):
        for j, sid in enumerate(ready["source_ids"]):
            where[ids[sid]] = (p, j)
    first_seen: dict[str, float] = {}
    for r in records:
        first_seen.setdefault(r.stream_id, r.recv_clock)
    e2e, processing, delivery, unmatched = [], [], [], 0
    for r in records:
        if r.recv_clock < first_seen[r.stream_id] + config.warmup_s:
            continue
        p, j = where[r.stream_id]
        ready = group.ready[p]
        index = int(round((r.lsl_time - ready["t0"]) * ready["fs_hz"]))
        k = index // ready["chunk_samples"]
        if not 0 <= k < pushes[p].shape[1]:
            unmatched += 1
            continue
        e2e.append(r.recv_clock - pushes[p][j, k])
        processing.append(r.latency_ms / 1000.0)
        delivery.append(r.recv_wall - r.server_time)
    measured_s = (mem[-1][0] - mem[0][0]) if len(mem) > 1 else 0.0
    cpu_s = (mem[-1][2] - mem[0][2]) if len(mem) > 1 else math.nan
    missing = sum(v for k, v in metrics.items() if k.startswith("rohde_stream_missing_samples_total"))
    gaps = sum(v for k, v in metrics.items() if k.startswith("rohde_stream_gaps_total"))
    overflows = sum(v for k, v in metrics.items() if k.startswith("rohde_stream_overflows_total"))
    ws_dropped = metrics.get("rohde_ws_dropped_messages_total", 0.0)
    # The tail: did the server pull everything that was pushed before the outlets stopped?
    tail_missing = 0
    for stream_id in ids.values():
        p, j = where[stream_id]
        ready = group.ready[p]
        n_chunks = int(np.count_nonzero(pushes[p][j]))
        last_pushed = ready["t0"] + (n_chunks * ready["chunk_samples"] - 1) / ready["fs_hz"]
        last_pulled = streams.get(stream_id, {}).get("last_lsl_time") or 0.0
        tail_missing += max(0, int(round((last_pushed - last_pulled) * ready["fs_hz"])))
    hop_s = meta.hop_ms / 1000.0
    expected = len(ids) * max(0.0, config.warmup_s + (measured_s - config.warmup_s)) / hop_s if measured_s else 0
    e2e_p = percentiles_ms(e2e)
    lossless = missing == 0 and overflows == 0 and tail_missing == 0 and ws_dropped == 0
    return {
        "n_streams": len(ids),
        "measured_s": round(measured_s, 1),
        "decisions_received": len(records),
        "decisions_expected_approx": int(expected),
        "e2e_latency_ms": e2e_p,
        "server_processing_ms": percentiles_ms(processing),
        "delivery_ms": percentiles_ms(delivery),
        "unmatched_decisions": unmatched,
        "server_cpu_cores": round(cpu_s / measured_s, 3) if measured_s else math.nan,
        "server_cpu_s_per_stream_s": round(cpu_s / measured_s / len(ids), 4) if measured_s else math.nan,
        "server_rss_mb": {"start": round(mem[0][1], 1), "max": round(max(m[1] for m in mem), 1),
                          "end": round(rss_end, 1)},
        "lost": {"missing_samples": missing, "gaps": gaps, "overflows": overflows,
                 "tail_samples_not_pulled": tail_missing, "ws_dropped_messages": ws_dropped},
        "lossless": lossless,
        "realtime_ok": bool(lossless and e2e_p["n"] > 0 and e2e_p["p99"] < P99_LIMIT_MS),
        "server_health": health.get("status"),
        "provider": (health.get("model") or ""),
        "memory_samples": [(round(t - mem[0][0], 1), round(r, 1)) for t, r, _ in mem],
    }


# ---- per-stage costs (in-process, the server's own components) -----------------------------------------

def stage_costs(model: Path, *, chunk_ms: float, seconds: float = 1.0,
                providers: Sequence[str] | None = None) -> dict[str, float]:
    """Median per-window cost in ms of preprocessing (filter + windows + normalisation), inference
    (batch of 1, the server's engine) and message building + JSON serialisation."""
    from rohde.core.model_package import load_model_package
    from rohde.core.preprocessing import StreamFilter
    from rohde.core.windows import StreamWindower
    from rohde.server.decisions import DecisionSmoother
    from rohde.server.inference import InferenceEngine
    from rohde.server.messages import PredictionMessage

    package = load_model_package(model)
    meta = package.metadata
    hop = package.windows.hop_samples(meta.fs_hz)
    chunk = max(1, int(round(chunk_ms * meta.fs_hz / 1000.0)))
    data = (np.random.default_rng(0).standard_normal((int(meta.fs_hz * 2), meta.n_channels)) * 20).astype(np.float32)
    filt = StreamFilter(package.preprocessing, meta.n_channels)
    windower = StreamWindower(meta.n_channels, meta.window_samples, hop)
    n_windows, t_pre = 0, 0.0
    pos = 0
    windows: list[np.ndarray] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or n_windows < 20:
        block = data[pos % (len(data) - chunk) : pos % (len(data) - chunk) + chunk]
        pos += chunk
        t = time.perf_counter()
        ready = windower.push(filt.process(block))
        for _, window in ready:
            windows.append(np.ascontiguousarray(package.normalization.apply(window.T).T, dtype=np.float32))
        t_pre += time.perf_counter() - t
        n_windows += len(ready)
    engine = InferenceEngine(package, providers=providers)
    times = []
    for w in windows[:200]:
        t = time.perf_counter()
        probs = engine.run(w[None])
        times.append(time.perf_counter() - t)
    smoother = DecisionSmoother(k=5, confidence_threshold=0.5)
    ser = []
    for _ in range(200):
        t = time.perf_counter()
        d = smoother.update(probs[0], input_reject_reason=None)
        PredictionMessage(stream_id="s", seq=1, lsl_time=1.0, server_time=time.time(),
                          gesture=meta.labels[d.gesture_index], gesture_index=d.gesture_index, confidence=d.confidence,
                          window_gesture=meta.labels[d.window_index], probabilities=[float(p) for p in probs[0]],
                          labels=list(meta.labels), rejected=d.rejected, reject_reason=d.reject_reason, vote_k=5,
                          confidence_threshold=0.5, latency_ms=1.0, model_name=meta.name,
                          model_version=meta.version, bad_channels=[], condition_flags=[]).model_dump_json()
        ser.append(time.perf_counter() - t)
    return {
        "preprocessing_ms_per_window": round(t_pre / max(n_windows, 1) * 1000, 4),
        "inference_ms_batch1": round(statistics.median(times) * 1000, 4),
        "decision_and_serialisation_ms": round(statistics.median(ser) * 1000, 4),
        "chunk_ms": chunk_ms,
    }


# ---- sections ---------------------------------------------------------------------------------------------

def bench_latency(config: BenchConfig, model: Path, workdir: Path) -> dict[str, Any]:
    from rohde.core.model_package import load_model_package

    meta = load_model_package(model).metadata
    steps: list[dict[str, Any]] = []
    for n in config.latency_streams:
        logger.info("Latency: %d streams for %.0f s.", n, config.step_s)
        steps.append(run_step(config, model=model, meta=meta, n_streams=n, duration_s=config.step_s,
                              workdir=workdir))
        logger.info("  %s", _step_line(steps[-1]))
    for _ in range(config.capacity_probes):
        capacity, first_fail = _capacity(steps)
        if first_fail is None:
            n = max(capacity + 1, capacity * 3 // 2)
        elif first_fail - capacity <= 1:
            break
        else:
            n = (capacity + first_fail) // 2
        logger.info("Capacity probe: %d streams for %.0f s.", n, config.step_s)
        steps.append(run_step(config, model=model, meta=meta, n_streams=n, duration_s=config.step_s,
                              workdir=workdir))
        logger.info("  %s", _step_line(steps[-1]))
    capacity, _ = _capacity(steps)
    tried = sorted(s["n_streams"] for s in steps)
    stages = stage_costs(model, chunk_ms=config.chunk_ms,
                         providers=["CUDAExecutionProvider", "CPUExecutionProvider"] if config.gpu else None)
    return {
        "model": str(model), "n_channels": meta.n_channels, "fs_hz": meta.fs_hz, "window_ms": meta.window_ms,
        "hop_ms": meta.hop_ms, "chunk_ms": config.chunk_ms, "server_overrides": server_overrides(config),
        "pull_interval_ms": config.pull_interval_ms or 2.0, "step_s": config.step_s, "warmup_s": config.warmup_s,
        "steps": steps, "capacity_streams": capacity, "capacity_tried": tried, "p99_limit_ms": P99_LIMIT_MS,
        "stage_costs": stages,
    }


def _capacity(steps: Sequence[dict[str, Any]]) -> tuple[int, int | None]:
    """(largest count that passed with every smaller count tried also passing, smallest failing count)."""
    capacity, first_fail = 0, None
    for step in sorted(steps, key=lambda s: s["n_streams"]):
        if step["realtime_ok"] and first_fail is None:
            capacity = step["n_streams"]
        elif not step["realtime_ok"] and first_fail is None:
            first_fail = step["n_streams"]
    return capacity, first_fail


def _step_line(step: dict[str, Any]) -> str:
    e = step["e2e_latency_ms"]
    return (f"{step['n_streams']} streams: e2e p50 {e['p50']} p95 {e['p95']} p99 {e['p99']} ms, "
            f"server CPU {step['server_cpu_cores']} cores, RSS {step['server_rss_mb']['end']} MB, "
            f"lossless {step['lossless']}, realtime {step['realtime_ok']}")


def bench_soak(config: BenchConfig, model: Path, workdir: Path) -> dict[str, Any]:
    from rohde.core.model_package import load_model_package

    meta = load_model_package(model).metadata
    logger.info("Soak: %d streams for %.0f s.", config.soak_streams, config.soak_s)
    step = run_step(config, model=model, meta=meta, n_streams=config.soak_streams, duration_s=config.soak_s,
                    workdir=workdir, sample_every_s=max(1.0, config.soak_s / 60))
    if "failed" in step:
        return step
    t = np.array([m[0] for m in step["memory_samples"]])
    rss = np.array([m[1] for m in step["memory_samples"]])
    keep = t >= min(30.0, t.max() / 4)  # after start-up allocations settle
    slope = float(np.polyfit(t[keep], rss[keep], 1)[0] * 60) if keep.sum() >= 3 else math.nan
    step["rss_slope_mb_per_min"] = round(slope, 3)
    step["rss_growth_mb_after_settle"] = round(float(rss[keep][-1] - rss[keep][0]), 1) if keep.any() else math.nan
    step["soak_s"] = config.soak_s
    return step


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
    provider = session.get_providers()[0]
    if config.gpu and provider != "CUDAExecutionProvider":
        raise ConfigError(f"--gpu asked for CUDA but ONNX Runtime runs on {provider}.")
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
    return {"provider": provider, "device": device, "threads": 1, "io_binding": config.gpu,
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


# ---- ingestion consumers (subprocesses) ------------------------------------------------------------------



def run_ingest_consumer(*, kind: str, name: str, source_id: str, seconds: float, warmup_s: float, model: Path,
                        result_file: Path, pull_interval_ms: float | None = None,
                        quality_interval_s: float | None = None) -> None:
    """Read the stream `source_id` with one ingestion implementation; write its CPU per stream-second."""
    from rohde.core.model_package import load_model_package

    package = load_model_package(model)
    meta = package.metadata
    stop = threading.Event()
    counter = {"samples": 0}
    threads: list[threading.Thread] = []
    if kind == "ours":
        from rohde.server.inference import ModelManager
        from rohde.server.ingest import CONNECTED, IngestConfig, JobQueue, StreamWorker
        from rohde.server.lsl_inlet import StreamQuery, resolve
        from rohde.server.metrics import ServerMetrics
        from rohde.server.quality import QualityThresholds

        ingest = IngestConfig(lsl_config=LSL_CONFIG)
        if pull_interval_ms is not None:
            ingest = replace(ingest, pull_interval_s=pull_interval_ms / 1000.0)
        if quality_interval_s is not None:
            ingest = replace(ingest, quality=QualityThresholds(interval_s=quality_interval_s))

        models = ModelManager(model.parent)
        models.activate(model.name)
        metrics = ServerMetrics()
        jobs = JobQueue(100_000, metrics)
        query = StreamQuery(name=name, source_id=source_id)
        worker = StreamWorker("bench", query=query, models=models, jobs=jobs, metrics=metrics,
                              config=ingest, announce=lambda *_: None)
        infos = resolve(query, timeout_s=5.0, lsl_config=LSL_CONFIG)
        if not infos:
            raise RohdeError(f"Stream {source_id!r} not found.")
        worker.attach(infos[0])
        worker.start()

        def drain() -> None:  # stands in for the inference thread: takes the windows, nothing more
            while not stop.is_set():
                try:
                    jobs.get(timeout=0.1)
                except queue.Empty:
                    continue

        threads.append(threading.Thread(target=drain, daemon=True))
        threads[-1].start()
        deadline = time.monotonic() + 10
        while worker.state != CONNECTED and time.monotonic() < deadline:
            time.sleep(0.05)

        def samples() -> int:
            if worker.error:
                raise RohdeError(f"Our stream worker failed: {worker.error}")
            return worker.samples_received

        cleanup = worker.stop
    elif kind == "mne_lsl":
        try:
            from mne_lsl.stream import StreamLSL
        except ImportError as exc:
            raise RohdeError("mne-lsl is not installed: `pip install mne-lsl` to compare against it.") from exc
        import mne

        mne.set_log_level("WARNING")
        pre = package.preprocessing
        stream = StreamLSL(bufsize=2.0, name=name, stype="EMG", source_id=source_id)
        stream.connect(acquisition_delay=0.001)
        low, high = pre.effective_band_hz
        stream.filter(low, high, picks="all",
                      iir_params={"order": pre.bandpass_order, "ftype": "butter", "output": "sos"})
        freqs = pre.notch_frequencies()
        for freq in freqs:  # one causal IIR notch per frequency, as our chain has
            stream.notch_filter(float(freq), picks="all", notch_widths=float(freq) / pre.notch_q)
        win = meta.window_ms / 1000.0

        def reader() -> None:  # a window every hop, as the server's windower delivers
            while not stop.is_set():
                stream.get_data(winsize=win)
                counter["samples"] += 1
                stop.wait(meta.hop_ms / 1000.0)

        threads.append(threading.Thread(target=reader, daemon=True))
        threads[-1].start()

        def samples() -> int:  # windows read (MNE-LSL counts no samples for us)
            return counter["samples"]

        cleanup = stream.disconnect
    elif kind in ("pylsl_sosfilt", "pylsl_plain", "pylsl_wait"):
        from rohde.core.preprocessing import StreamFilter
        from rohde.server.lsl_inlet import import_pylsl

        pylsl = import_pylsl(LSL_CONFIG)
        infos = pylsl.resolve_bypred(f"source_id='{source_id}'", 0, 5.0)
        inlet = pylsl.StreamInlet(infos[0], max_buflen=10)
        inlet.open_stream(timeout=5.0)
        buf = np.zeros((int(meta.fs_hz), meta.n_channels), dtype=np.float32)
        filt = StreamFilter(package.preprocessing, meta.n_channels) if kind != "pylsl_plain" else None
        wait = kind == "pylsl_wait"

        def loop() -> None:  # poll every 1 ms, or wait in liblsl for the next chunk
            while not stop.is_set():
                if wait:
                    _, stamps = inlet.pull_chunk(timeout=0.1, max_samples=len(buf), dest_obj=buf, min_samples=1)
                else:
                    _, stamps = inlet.pull_chunk(timeout=0.0, max_samples=len(buf), dest_obj=buf)
                if len(stamps):
                    counter["samples"] += len(stamps)
                    if filt is not None:
                        filt.process(buf[: len(stamps)])
                if not wait:
                    time.sleep(0.001)

        threads.append(threading.Thread(target=loop, daemon=True))
        threads[-1].start()

        def samples() -> int:
            return counter["samples"]

        cleanup = inlet.close_stream
    else:
        raise ConfigError(f"Unknown ingestion kind {kind!r}; choose from {list(INGEST_KINDS)}.")
    time.sleep(warmup_s)
    s0, c0, w0 = samples(), proc_cpu_s(os.getpid()), time.monotonic()
    time.sleep(seconds)
    s1, c1, w1 = samples(), proc_cpu_s(os.getpid()), time.monotonic()
    stop.set()
    for t in threads:
        t.join(2.0)
    cleanup()
    wall = w1 - w0
    if s1 == s0:  # a reader that got nothing measured nothing: refuse rather than report its idle CPU
        raise RohdeError(f"Ingestion reader {kind!r} received nothing in {seconds:.0f} s.")
    result_file.write_text(json.dumps({
        "kind": kind, "cpu_s": c1 - c0, "wall_s": wall, "cpu_s_per_stream_s": (c1 - c0) / wall,
        "samples_or_reads": s1 - s0, "rss_mb": proc_rss_mb(os.getpid()),
    }))


def bench_ingestion(config: BenchConfig, model: Path, workdir: Path) -> dict[str, Any]:
    from rohde.core.model_package import load_model_package

    meta = load_model_package(model).metadata
    results: dict[str, Any] = {}
    with outlet_group(n_streams=1, n_channels=meta.n_channels, fs_hz=meta.fs_hz, chunk_ms=config.chunk_ms,
                      per_process=1, workdir=workdir) as group:
        runs: list[tuple[str, str, list[str]]] = [(kind, kind, []) for kind in config.ingest_kinds]
        tuned: list[str] = []
        if config.pull_interval_ms is not None:
            tuned += ["--pull-interval-ms", str(config.pull_interval_ms)]
        if config.quality_interval_s is not None:
            tuned += ["--quality-interval-s", str(config.quality_interval_s)]
        if tuned:
            runs.insert(1, ("ours_tuned", "ours", tuned))
        for label, kind, extra in runs:
            result_file = workdir / f"ingest-{label}.json"
            log = workdir / f"ingest-{label}.log"
            cmd = [sys.executable, "-m", "rohde.benchmarks", "ingest", "--kind", kind, "--name", group.name,
                   "--source-id", group.source_ids[0], "--seconds", str(config.ingest_s), "--warmup-s", "3",
                   "--model", str(model), "--result-file", str(result_file), *extra]
            logger.info("Ingestion: %s for %.0f s.", label, config.ingest_s)
            with child(cmd, log=log) as proc:
                proc.wait(timeout=config.ingest_s + 120)
            if result_file.exists():
                results[label] = json.loads(result_file.read_text())
                results[label]["settings"] = " ".join(extra) or "defaults"
            else:
                results[label] = {"error": log.read_text()[-1500:]}
            logger.info("  %s", results[label])
        stop_outlets(group)
    ours = results.get("ours", {}).get("cpu_s_per_stream_s")
    ours_tuned = results.get("ours_tuned", {}).get("cpu_s_per_stream_s")
    mne = results.get("mne_lsl", {}).get("cpu_s_per_stream_s")
    return {
        "stream": f"{meta.n_channels} ch float32 at {meta.fs_hz:g} Hz, chunks of {config.chunk_ms:g} ms",
        "seconds_each": config.ingest_s, "order": "consumers one after another on the same outlet",
        "ours_settings": "StreamWorker: pulls that wait in liblsl for the samples missing until the next window "
                         "end, into a preallocated buffer; gap check, "
                         "quality monitor, StreamFilter (band-pass + notches), windower, normalisation; windows "
                         "taken by a thread that discards them",
        "mne_lsl_settings": "StreamLSL(bufsize=2 s), acquisition_delay 1 ms, same band-pass (Butterworth SOS) and "
                            "notches, get_data(winsize=window) every hop",
        "results": results,
        "ratio_ours_over_mne_lsl": round(ours / mne, 3) if ours and mne else None,
        "ratio_ours_tuned_over_mne_lsl": round(ours_tuned / mne, 3) if ours_tuned and mne else None,
    }


# ---- report ------------------------------------------------------------------------------------------------

def write_outputs(results: dict[str, Any], out_dir: Path, *, merge: bool = False) -> tuple[Path, Path]:
    """Merge `results` into out_dir/results.json (GPU figures beside the CPU ones) and regenerate RESULTS.md.

    With `merge`, only the sections measured now replace those of the stored run with the same label;
    its `meta.remeasured` lists each such partial run (date, command, sections)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    existing: dict[str, Any] = {}
    if json_path.exists():
        try:
            existing = json.loads(json_path.read_text())
        except json.JSONDecodeError:
            existing = {}
    key = results["meta"].get("label") or ("gpu" if results["meta"].get("gpu") else "cpu")
    stored = existing.get(key)
    if merge and isinstance(stored, dict):
        sections = [k for k in results if k != "meta"]
        stored["meta"].setdefault("remeasured", []).append(
            {"date_utc": results["meta"]["date_utc"], "command": results["meta"]["command"], "sections": sections})
        stored.update({k: results[k] for k in sections})
    else:
        existing[key] = results
    existing.setdefault("cpu", None)
    existing.setdefault("gpu", None)
    json_path.write_text(json.dumps(_finite(existing), indent=2, default=_json_default, allow_nan=False) + "\n")
    md_path = out_dir / "RESULTS.md"
    md_path.write_text(render_markdown(existing))
    return json_path, md_path


def _finite(value: Any) -> Any:
    """NaN and infinities as null, so results.json is strict JSON."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Cannot serialise {type(value).__name__}.")


def render_markdown(all_results: dict[str, Any]) -> str:
    lines = ["# Benchmark results", "",
             "Generated by `rohde bench` from `bench/results.json`; profile findings are in `bench/PROFILE.md`.",
             "Timings come from one run on a shared machine: read medians and ratios, not absolute times.", ""]
    keys = ["cpu", *sorted(k for k in all_results if k not in ("cpu", "gpu")), "gpu"]
    for key in keys:
        res = all_results.get(key)
        if not res:
            lines += [f"## {key.upper()}", "", "Not run." if key == "gpu" else "No CPU run recorded.", ""]
            continue
        meta = res["meta"]
        m = meta["machine"]
        lines += [f"## {key.upper()} run", "",
                  f"- Date: {meta['date_utc']}", f"- Command: `{meta['command']}`",
                  f"- Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['memory_gb']} GB, "
                  f"load average at start {m['load_avg_1_5_15']}; Python {m['python']}; "
                  + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
                  f"- Model: {meta['model_source']}", f"- Wall time of the run: {meta.get('wall_s', 'n/a')} s"]
        lines += [f"- Re-measured {', '.join(r['sections'])} on {r['date_utc']}: `{r['command']}`"
                  for r in meta.get("remeasured", [])]
        lines += [""]
        if key != "cpu" and all_results.get("cpu"):
            lines += _md_compare(all_results["cpu"], res, key)
        lines += _md_latency(res.get("latency"))
        lines += _md_soak(res.get("soak"))
        lines += _md_inference(res.get("inference"))
        lines += _md_ingestion(res.get("ingestion"))
    return "\n".join(lines) + "\n"


def _g(value: float | None) -> str:
    """A count or figure for a table; results.json stores what could not be measured as null."""
    return "n/a" if value is None else f"{value:g}"


def _md_latency(lat: dict[str, Any] | None) -> list[str]:
    if not lat:
        return []
    lines = ["### Decision latency and capacity", "",
             f"{lat['n_channels']} ch at {lat['fs_hz']:g} Hz, window {lat['window_ms']:g} ms, "
             f"hop {lat['hop_ms']:g} ms, server pulls wait in liblsl for each window's samples (idle sleep "
             f"after an empty pull {lat.get('pull_interval_ms', 2.0):g} ms), "
             f"outlets push every {lat['chunk_ms']:g} ms; {lat['step_s']:g} s measured per row after "
             f"{lat['warmup_s']:g} s warm-up. End-to-end = outlet push of a window's last sample -> WebSocket "
             "client receipt. Server processing = the server's own `latency_ms` (chunk pulled -> decision built: "
             "preprocessing, queue, inference). Delivery = decision built -> client receipt (serialisation, hub, "
             "send, receive). The rest of end-to-end is push -> pull.", "",
             "| streams | e2e p50 | e2e p95 | e2e p99 | e2e max | server proc p50 / p99 | delivery p50 / p99 | "
             "server CPU (cores) | RSS end (MB) | lost samples / gaps / overflows / tail / ws drops | real time |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in lat["steps"]:
        e, p, d, lost = s["e2e_latency_ms"], s["server_processing_ms"], s["delivery_ms"], s["lost"]
        lines.append(
            f"| {s['n_streams']} | {e['p50']} | {e['p95']} | {e['p99']} | {e['max']} | {p['p50']} / {p['p99']} | "
            f"{d['p50']} / {d['p99']} | {s['server_cpu_cores']} | {s['server_rss_mb']['end']} | "
            f"{_g(lost['missing_samples'])} / {_g(lost['gaps'])} / {_g(lost['overflows'])} / "
            f"{_g(lost['tail_samples_not_pulled'])} / {_g(lost['ws_dropped_messages'])} | "
            f"{'yes' if s['realtime_ok'] else 'no'} |")
    for s in lat["steps"]:
        if s.get("failed") or s.get("client_errors"):
            errors = "; ".join(s.get("client_errors") or [])[:300]
            lines.append(f"\n{s['n_streams']} streams: {s.get('failed') or ''} {errors}")
    st = lat["stage_costs"]
    lines += ["", f"**Capacity**: {lat['capacity_streams']} streams (tried {lat['capacity_tried']}; criterion: no "
              f"lost samples or messages and e2e p99 < {lat['p99_limit_ms']:g} ms).", "",
              f"Per-window stage costs measured in-process with the server's components: preprocessing "
              f"{st['preprocessing_ms_per_window']} ms, inference (batch 1) {st['inference_ms_batch1']} ms, "
              f"decision + message + JSON {st['decision_and_serialisation_ms']} ms.", ""]
    return lines


def _md_compare(before: dict[str, Any], after: dict[str, Any], label: str) -> list[str]:
    """Before (`cpu`) and after (`label`) side by side, stream count by stream count."""
    lines = [f"### Before (`cpu`) and after (`{label}`)", ""]
    b_lat, a_lat = before.get("latency"), after.get("latency")
    if b_lat and a_lat:
        lines += ["| streams | e2e p50 before / after | e2e p99 before / after | server proc p99 before / after | "
                  "server CPU cores before / after | real time before / after |", "|---|---|---|---|---|---|"]
        b_steps = {s["n_streams"]: s for s in b_lat["steps"]}
        for s in a_lat["steps"]:
            b = b_steps.get(s["n_streams"])
            if b is None:
                continue
            lines.append(
                f"| {s['n_streams']} | {b['e2e_latency_ms']['p50']} / {s['e2e_latency_ms']['p50']} | "
                f"{b['e2e_latency_ms']['p99']} / {s['e2e_latency_ms']['p99']} | "
                f"{b['server_processing_ms']['p99']} / {s['server_processing_ms']['p99']} | "
                f"{b['server_cpu_cores']} / {s['server_cpu_cores']} | "
                f"{'yes' if b['realtime_ok'] else 'no'} / {'yes' if s['realtime_ok'] else 'no'} |")
        lines += ["", f"Capacity before / after: {b_lat['capacity_streams']} / {a_lat['capacity_streams']} streams.",
                  ""]
    b_ing, a_ing = before.get("ingestion"), after.get("ingestion")
    if b_ing and a_ing:
        lines += [f"Ingestion ours / MNE-LSL before / after: {b_ing['ratio_ours_over_mne_lsl']} / "
                  f"{a_ing['ratio_ours_over_mne_lsl']}.", ""]
    return lines


def _md_soak(soak: dict[str, Any] | None) -> list[str]:
    if not soak:
        return []
    if "failed" in soak:
        return ["### Memory soak", "", f"The soak run failed: {soak['failed']}", ""]
    e = soak["e2e_latency_ms"]
    return ["### Memory soak", "",
            f"{soak['n_streams']} streams for {soak['soak_s']:g} s: "
            f"server RSS start {soak['server_rss_mb']['start']} MB, "
            f"max {soak['server_rss_mb']['max']} MB, end {soak['server_rss_mb']['end']} MB; slope after settling "
            f"{soak['rss_slope_mb_per_min']} MB/min (growth {soak['rss_growth_mb_after_settle']} MB). "
            f"e2e latency p50 {e['p50']} / p99 {e['p99']} ms, lossless {soak['lossless']}.", ""]


def _md_inference(inf: dict[str, Any] | None) -> list[str]:
    if not inf:
        return []
    lines = ["### Inference: ONNX Runtime vs PyTorch eager", "",
             f"{inf['architecture']}; provider {inf['provider']}, {inf['threads']} thread each, device "
             f"{inf['device']}, IO binding {inf['io_binding']}; parity max |diff| {inf['parity_max_abs']:.2e}.", "",
             "| batch | torch ms | ORT ms | torch ms/window | ORT ms/window | torch / ORT "
             "| served package ORT ms/window |",
             "|---|---|---|---|---|---|---|"]
    for r in inf["rows"]:
        lines.append(f"| {r['batch']} | {r['torch_ms']} | {r['ort_ms']} | {r['torch_ms_per_window']} | "
                     f"{r['ort_ms_per_window']} | {r['ratio_torch_over_ort']} | "
                     f"{r['served_package_ort_ms_per_window']} |")
    return lines + [""]


def _md_ingestion(ing: dict[str, Any] | None) -> list[str]:
    if not ing:
        return []
    lines = ["### Ingestion CPU against MNE-LSL", "", f"Stream: {ing['stream']}; {ing['seconds_each']:g} s each, "
             f"{ing['order']}.", f"- ours: {ing['ours_settings']}", f"- MNE-LSL: {ing['mne_lsl_settings']}", "",
             "| reader | CPU s per stream-second | RSS MB |", "|---|---|---|"]
    for kind, r in ing["results"].items():
        if "error" in r:
            lines.append(f"| {kind} | failed: {r['error'].splitlines()[-1] if r['error'] else 'no output'} | |")
        else:
            lines.append(f"| {kind} ({r.get('settings', 'defaults')}) | {r['cpu_s_per_stream_s']:.4f} | "
                         f"{r['rss_mb']:.0f} |")
    lines += ["", f"**Ratio ours / MNE-LSL: {ing['ratio_ours_over_mne_lsl']}** (server defaults); "
              f"with the tuned settings: {ing.get('ratio_ours_tuned_over_mne_lsl')}", ""]
    return lines


# ---- entry points --------------------------------------------------------------------------------------------

def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run the configured sections and write bench/results.json and bench/RESULTS.md."""
    os.environ.setdefault("LSLAPICFG", str(LSL_CONFIG))
    started = time.monotonic()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rohde-bench-") as tmp:
        workdir = Path(tmp)
        model, source = resolve_model(config, workdir)
        results["meta"] = {
            "date_utc": datetime.now(UTC).isoformat(timespec="seconds"), "command": config.command,
            "machine": machine_description(), "model_source": source, "gpu": config.gpu, "label": config.label,
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        }
        if "inference" in config.sections:
            results["inference"] = bench_inference(config, model)
        if "ingestion" in config.sections:
            results["ingestion"] = bench_ingestion(config, model, workdir)
        if "latency" in config.sections:
            results["latency"] = bench_latency(config, model, workdir)
        if "soak" in config.sections:
            results["soak"] = bench_soak(config, model, workdir)
        results["meta"]["wall_s"] = round(time.monotonic() - started, 1)
        if os.environ.get("ROHDE_BENCH_KEEP_LOGS"):
            shutil.copytree(workdir, config.out_dir / "logs", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.npz"))
    write_outputs(results, config.out_dir, merge=config.merge)
    return results


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ConfigError(f"Expected comma-separated integers, got {text!r}.") from exc


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    p = subparsers.add_parser("bench", help="measure latency, capacity, inference and ingestion cost; write bench/")
    p.add_argument("--model", help="model package folder (default models/rohde-default, else a random-weight CNN)")
    p.add_argument("--out", default=str(REPO_ROOT / "bench"), help="folder for results.json and RESULTS.md")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--latency-streams", default="1,8,32", help="stream counts with a latency table (default 1,8,32)")
    p.add_argument("--capacity-probes", type=int, default=2,
                   help="further stream counts tried for capacity, bisecting pass and failure (default 2)")
    p.add_argument("--step-s", type=float, default=25.0, help="measured seconds per stream count (default 25)")
    p.add_argument("--soak-s", type=float, default=600.0, help="memory soak seconds (default 600)")
    p.add_argument("--soak-streams", type=int, default=8, help="streams during the soak (default 8)")
    p.add_argument("--ingest-s", type=float, default=20.0, help="measured seconds per ingestion reader (default 20)")
    p.add_argument("--ingest-kinds", default=",".join(INGEST_KINDS),
                   help=f"ingestion readers to compare (default {','.join(INGEST_KINDS)})")
    p.add_argument("--chunk-ms", type=float, default=10.0, help="outlet push interval (default 10)")
    p.add_argument("--inference-s", type=float, default=2.0, help="seconds timing each inference cell (default 2)")
    p.add_argument("--gpu", action="store_true", help="CUDA provider (IO binding) for inference and the server")
    p.add_argument("--pull-interval-ms", type=float, help="server pull interval for latency runs (default: server's)")
    p.add_argument("--quality-interval-s", type=float,
                   help="server quality-estimate interval for latency runs (default: server's)")
    p.add_argument("--label", default="", help="key of this run in results.json (default cpu or gpu)")
    p.add_argument("--merge", action="store_true",
                   help="replace only the measured sections of the stored run with this label (re-measure one part)")
    p.add_argument("--quick", action="store_true", help="a tiny smoke configuration (seconds, not minutes)")
    p.set_defaults(handler=_bench)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    config = BenchConfig(
        model=Path(args.model).resolve() if args.model else None, out_dir=Path(args.out),
        sections=tuple(s.strip() for s in args.sections.split(",") if s.strip()),
        latency_streams=_ints(args.latency_streams), capacity_probes=args.capacity_probes,
        step_s=args.step_s, soak_s=args.soak_s, soak_streams=args.soak_streams, ingest_s=args.ingest_s,
        ingest_kinds=tuple(k.strip() for k in args.ingest_kinds.split(",") if k.strip()),
        chunk_ms=args.chunk_ms, inference_s=args.inference_s, gpu=args.gpu, label=args.label, merge=args.merge,
        pull_interval_ms=args.pull_interval_ms, quality_interval_s=args.quality_interval_s,
        command=_command_line(),
    )
    if args.quick:
        config = replace(config, latency_streams=(1,), capacity_probes=0, step_s=3.0, warmup_s=1.0, soak_s=4.0,
                         soak_streams=2, ingest_s=2.0, batch_sizes=(1, 4), inference_s=0.2)
    return config


def _command_line() -> str:
    head = "python -m rohde.benchmarks" if sys.argv[0].endswith("benchmarks.py") else "rohde"
    return " ".join([head, *sys.argv[1:]])


def _bench(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    results = run_bench(config_from_args(args))
    lat = results.get("latency")
    if lat:
        logger.info("Capacity: %d streams.", lat["capacity_streams"])
    logger.info("Wrote %s/results.json and RESULTS.md.", args.out)
    return 0


def _main(argv: Sequence[str] | None = None) -> int:
    """`bench` (the same as `rohde bench`) and the internal roles `outlet` and `ingest`."""
    parser = argparse.ArgumentParser(prog="python -m rohde.benchmarks")
    sub = parser.add_subparsers(dest="role", required=True)
    register(sub)
    o = sub.add_parser("outlet")
    o.add_argument("--name", required=True)
    o.add_argument("--source-ids", required=True)
    o.add_argument("--n-channels", type=int, required=True)
    o.add_argument("--fs-hz", type=float, required=True)
    o.add_argument("--chunk-ms", type=float, required=True)
    o.add_argument("--ready-file", required=True)
    o.add_argument("--log-file", required=True)
    o.add_argument("--seed", type=int, default=0)
    i = sub.add_parser("ingest")
    i.add_argument("--kind", choices=INGEST_KINDS, required=True)
    i.add_argument("--name", required=True)
    i.add_argument("--source-id", required=True)
    i.add_argument("--seconds", type=float, required=True)
    i.add_argument("--warmup-s", type=float, default=3.0)
    i.add_argument("--model", required=True)
    i.add_argument("--result-file", required=True)
    i.add_argument("--pull-interval-ms", type=float)
    i.add_argument("--quality-interval-s", type=float)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.role == "bench":
        try:
            return _bench(args)
        except RohdeError as exc:
            logger.error("%s", exc)
            return 2
    if args.role == "outlet":
        run_outlets(name=args.name, source_ids=args.source_ids.split(","), n_channels=args.n_channels,
                    fs_hz=args.fs_hz, chunk_ms=args.chunk_ms, ready_file=Path(args.ready_file),
                    log_file=Path(args.log_file), seed=args.seed)
    else:
        run_ingest_consumer(kind=args.kind, name=args.name, source_id=args.source_id, seconds=args.seconds,
                            warmup_s=args.warmup_s, model=Path(args.model), result_file=Path(args.result_file),
                            pull_interval_ms=args.pull_interval_ms, quality_interval_s=args.quality_interval_s)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
