"""End to end with real parts: `rohde replay` (a pylsl outlet) and `rohde serve` in subprocesses, a real
WebSocket client and an LSL inlet on the truth markers."""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.sync.client import ClientConnection, connect

from rohde.server.lsl_inlet import import_pylsl
from rohde.server.processes import ChildGroup, free_port, unique_id

from .conftest import LSL_CONFIG, ROHDE, ModelSet, RunningOutlet, wait_for, wait_until_ready

pytestmark = [pytest.mark.lsl, pytest.mark.timeout(150)]
logger = logging.getLogger(__name__)  # figures: run with --log-cli-level=INFO
MARKER_TOLERANCE_S = 0.025  # how far from a gesture change a marker may place a window on the other side


def start_server(processes: ChildGroup, tmp_path: Path, model_set: ModelSet, stream_name: str, *extra: str) -> str:
    port = free_port()
    processes.start(
        [ROHDE, "serve", "--port", str(port), "--models-dir", str(model_set.models_dir), "--model", "good",
         "--stream-name", stream_name, *extra],
        log=tmp_path / f"server-{port}.log", extra_env={"ROHDE_RESOLVE_INTERVAL_S": "0.2"})
    base = f"http://127.0.0.1:{port}"

    wait_until_ready(base)
    return base


def messages_until(ws: ClientConnection, predicate: Any, timeout_s: float) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            message = json.loads(ws.recv(timeout=max(0.05, deadline - time.monotonic())))
        except TimeoutError:
            break
        seen.append(message)
        if predicate(message):
            return seen
    raise TimeoutError(f"no matching message in {timeout_s} s; last: {seen[-3:]}")


def collect(base: str, name: str, seconds: float) -> tuple[list[dict[str, Any]], list[list[str]], list[float]]:
    """Decisions of stream `name` over `seconds`, and the truth markers of its amplifier."""
    pylsl = import_pylsl(LSL_CONFIG)
    (truth_info,) = wait_for(lambda: pylsl.resolve_byprop("name", f"{name}-truth", 1, 1.0), 10)
    truth = pylsl.StreamInlet(truth_info, processing_flags=pylsl.proc_clocksync)
    truth.open_stream(timeout=5)
    predictions: list[dict[str, Any]] = []
    with connect(f"ws://127.0.0.1:{base.split(':')[-1]}/ws?stream={name}") as ws:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            message = json.loads(ws.recv(timeout=5))
            if message["kind"] == "prediction":
                predictions.append(message)
    markers, stamps = truth.pull_chunk(timeout=1.0)
    assert predictions and markers, "no decisions or no truth markers arrived"
    return predictions, markers, stamps


def compare_with_offline(predictions: list[dict[str, Any]], markers: list[list[str]], stamps: list[float], *,
                         samples: np.ndarray, labels: np.ndarray, fs_hz: float, package_dir: Path,
                         what: str) -> tuple[float, float, float]:
    """Place each live window in the source stream (a truth marker carries its sample index), run the
    same window offline (filter from sample 0, ONNX Runtime), and score both against the true labels.

    `samples` `(n, C)` and `labels` `(n,)` are the source stream from its first sample. Returns live
    accuracy, offline accuracy (same windows, usable labels only) and the live/offline agreement.
    """
    import onnxruntime as ort

    from rohde.core.model_package import load_model_package
    from rohde.core.preprocessing import filter_recording

    package = load_model_package(package_dir)
    t0 = stamps[0] - int(markers[0][2]) / fs_hz  # LSL time of the stream's sample 0
    window = package.metadata.window_samples
    ends = np.array([int(round((p["lsl_time"] - t0) * fs_hz)) + 1 for p in predictions])
    assert (ends > window).all() and (ends <= len(samples)).all()
    normalized = package.normalization.apply(filter_recording(samples[: ends.max()], package.preprocessing))
    session = ort.InferenceSession(str(package.onnx_path), providers=["CPUExecutionProvider"])
    batch = np.stack([normalized[e - window : e].T for e in ends])
    offline = np.argmax(session.run(None, {package.metadata.input_name: batch})[0], axis=1)
    names = package.metadata.labels
    live = np.array([names.index(p["window_gesture"]) for p in predictions])
    truth = labels[ends - 1]
    usable = truth >= 0
    live_accuracy = float(np.mean(live[usable] == truth[usable]))
    offline_accuracy = float(np.mean(offline[usable] == truth[usable]))
    agreement = float(np.mean(live == offline))
    latencies = np.array([p["latency_ms"] for p in predictions])
    logger.info("%s: live accuracy %.3f, offline %.3f on the same %d windows, live/offline agreement %.3f; "
                "processing latency median %.2f ms, p99 %.2f ms", what, live_accuracy, offline_accuracy,
                int(usable.sum()), agreement, np.median(latencies), np.percentile(latencies, 99))
    assert usable.sum() > 150  # about 20 decisions per second
    # The truth markers alone (latest marker at or before a window's end, as `rohde demo` scores) give
    # the same labels as the source.
    order = np.argsort(stamps, kind="stable")
    sorted_stamps = np.asarray(stamps)[order]
    scored = np.array([p["lsl_time"] >= sorted_stamps[0] for p in predictions])
    latest = np.searchsorted(sorted_stamps, [p["lsl_time"] for p in predictions], side="right") - 1
    from_markers = [markers[order[i]][0] for i in latest]
    source = [names[t] if t >= 0 else "pause" for t in truth]
    same = np.array([a == b for a, b in zip(from_markers, source, strict=True)])
    # Marker and sample stamps are each clock-corrected by their own inlet's running estimate, which moves
    # by milliseconds on a loaded machine: only a window ending that close to a change may read the
    # neighbouring label.
    changes = np.nonzero(np.diff(labels[: ends.max()]))[0] + 1
    to_change = np.min(np.abs((ends - 1)[:, None] - changes[None, :]), axis=1) if len(changes) else ends
    wrong = scored & ~same
    assert (to_change[wrong] <= MARKER_TOLERANCE_S * fs_hz).all(), [
        (a, b, int(d)) for a, b, d, w in zip(from_markers, source, to_change, wrong, strict=True) if w]
    assert same[scored].mean() >= 0.95
    return live_accuracy, offline_accuracy, agreement


def test_live_decisions_follow_the_truth(tmp_path: Path, model_set: ModelSet, processes: ChildGroup,
                                         lsl_outlet: Callable[..., RunningOutlet]) -> None:
    name = unique_id("e2e")
    recording = model_set.recording
    lsl_outlet("replay", str(recording.save(tmp_path / "replay")), name=name, source_id=name)
    base = start_server(processes, tmp_path, model_set, name)
    predictions, markers, stamps = collect(base, name, 14.0)
    loops = 40  # the replay loops the 8 s recording; enough copies for every live window
    live_accuracy, offline_accuracy, agreement = compare_with_offline(
        predictions, markers, stamps, samples=np.tile(recording.samples, (loops, 1)),
        labels=np.tile(recording.labels, loops), fs_hz=recording.fs_hz, package_dir=model_set.models_dir / "good",
        what="replayed recording")
    assert abs(live_accuracy - offline_accuracy) <= 0.02
    assert agreement >= 0.97
    smoothed = [p["gesture"] for p in predictions]
    assert set(smoothed) == set(recording.gesture_names)  # follows every scheduled gesture
    assert "rohde_processing_latency_seconds_count" in httpx.get(f"{base}/metrics").text


def test_killed_outlet_recovers_with_same_and_new_source_id(tmp_path: Path, model_set: ModelSet,
                                                            processes: ChildGroup,
                                                            lsl_outlet: Callable[..., RunningOutlet]) -> None:
    name = unique_id("restart")
    recording_file = str(model_set.recording.save(tmp_path / "replay"))
    first = lsl_outlet("replay", recording_file, name=name, source_id=f"{name}-a")
    base = start_server(processes, tmp_path, model_set, name)
    stream_id = f"{name}-a"
    with connect(f"ws://127.0.0.1:{base.split(':')[-1]}/ws") as ws:
        messages_until(ws, lambda m: m["kind"] == "prediction", 15)
        for new_source in (f"{name}-a", f"{name}-b"):  # same source_id, then a new one
            first.child.process.send_signal(signal.SIGKILL)
            first.child.process.wait(5)
            lost = messages_until(ws, lambda m: m.get("event") == "stream_lost", 10)[-1]
            assert lost["stream_id"] == stream_id
            state = httpx.get(f"{base}/streams").json()["streams"][0]
            assert state["state"] == "lost" and state["reason"]
            first = lsl_outlet("replay", recording_file, name=name, source_id=new_source)
            back = messages_until(ws, lambda m: m.get("event") == "stream_recovered", 20)[-1]
            assert back["stream_id"] == stream_id and back["source_id"] == new_source
            after = messages_until(ws, lambda m: m["kind"] == "prediction", 10)[-1]
            assert after["stream_id"] == stream_id
    streams = httpx.get(f"{base}/streams").json()["streams"]
    assert len(streams) == 1 and streams[0]["lost_count"] == 2 and streams[0]["recovered_count"] == 2
    assert streams[0]["source_id"] == f"{name}-b"


@pytest.mark.slow
def test_simulated_amplifier_live_accuracy_matches_offline(tmp_path: Path, simulator_models: Path,
                                                           processes: ChildGroup,
                                                           lsl_outlet: Callable[..., RunningOutlet]) -> None:
    """`rohde simulate` -> `rohde serve` -> WebSocket: each live window is located in the simulator's
    sample stream (via the truth markers) and compared with the offline evaluation of the same window."""
    from rohde.simulation.simulator import LiveSimulator

    name, seed, live_s = unique_id("sim"), 21, 14.0
    lsl_outlet("simulate", "--seed", str(seed), "--schedule", "clean", "--subject", "0", "--session", "0",
               name=name, source_id=name)
    model_set = ModelSet(simulator_models, None, 0.0)  # type: ignore[arg-type]
    base = start_server(processes, tmp_path, model_set, name)
    predictions, markers, stamps = collect(base, name, live_s)
    sim = LiveSimulator(subject=0, session=0, seed=seed, schedule=("clean",), condition_s=30.0)
    t0 = stamps[0] - int(markers[0][2]) / sim.fs_hz
    chunk = sim.read(int((max(p["lsl_time"] for p in predictions) - t0 + 1.0) * sim.fs_hz))
    live_accuracy, offline_accuracy, agreement = compare_with_offline(
        predictions, markers, stamps, samples=chunk.samples, labels=chunk.labels, fs_hz=sim.fs_hz,
        package_dir=simulator_models / "good", what="simulator stream")
    assert abs(live_accuracy - offline_accuracy) <= 0.02
    assert agreement >= 0.97


def _stalled_websocket(port: int, path: str) -> Any:
    """A real WebSocket client over TCP that completes the handshake and then never reads.

    Its tiny receive buffer and segment size (loopback segments are 64 kB, and the kernel sizes the
    server's send buffer from them) make the server's socket back up within seconds, as a client on a
    congested link or a frozen browser tab would.
    """
    import base64
    import os
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert b" 101 " in response.split(b"\r\n")[0], response
    return sock


def test_stalled_websocket_client_loses_oldest_and_never_stalls_others(
    tmp_path: Path, model_set: ModelSet, processes: ChildGroup, lsl_outlet: Callable[..., RunningOutlet]
) -> None:
    name = unique_id("slow")
    lsl_outlet("replay", str(model_set.recording.save(tmp_path / "replay")), name=name, source_id=name)
    base = start_server(processes, tmp_path, model_set, name, "--ws-queue-size", "8")
    port = int(base.split(":")[-1])
    stalled = _stalled_websocket(port, f"/ws?stream={name}")
    try:
        sequences: list[int] = []
        with connect(f"ws://127.0.0.1:{port}/ws?stream={name}") as ws:
            end = time.monotonic() + 20.0
            while time.monotonic() < end:
                try:
                    message = json.loads(ws.recv(timeout=5))
                except TimeoutError:
                    raise AssertionError(f"attentive client starved after {len(sequences)} decisions") from None
                if message["kind"] == "prediction":
                    sequences.append(message["seq"])
        metrics = httpx.get(f"{base}/metrics").text
    finally:
        stalled.close()
    dropped = next(float(line.split()[-1]) for line in metrics.splitlines()
                   if line.startswith("rohde_ws_dropped_messages_total"))
    assert dropped > 0, "the stalled client never lost a message: its socket did not back up"
    # The attentive client saw every decision, in order, at the full rate (about 20 per second).
    assert len(sequences) > 300
    assert np.all(np.diff(sequences) == 1), "the attentive client missed decisions"
