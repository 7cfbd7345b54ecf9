"""Process faults with real processes: every long-running command ends promptly on SIGTERM while it
streams, and a stopped server tells its WebSocket clients, joins its threads and comes back to the same
state from the same settings.

Bounds are generous (the machine is shared); the measured figures go to the log (--log-cli-level=INFO).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from rohde.server.processes import Child, ChildGroup, unique_id

from .conftest import LSL_CONFIG, ROHDE, ModelSet, RunningOutlet, wait_for, wait_until_resolvable
from .test_e2e import start_server

pytestmark = [pytest.mark.lsl, pytest.mark.timeout(240)]
logger = logging.getLogger(__name__)

EXIT_BOUND_S = 3.0  # generous: the measured exits are well under a second


def sigterm_exit_s(child: Child) -> float:
    """Send SIGTERM and return the seconds until the process exited (fails past `EXIT_BOUND_S`)."""
    started = time.monotonic()
    child.process.send_signal(signal.SIGTERM)
    try:
        child.process.wait(EXIT_BOUND_S)
    except subprocess.TimeoutExpired:
        child.process.kill()
        pytest.fail(f"{child.describe()} ignored SIGTERM for {EXIT_BOUND_S} s; its log ends with:\n{child.log_tail()}")
    return time.monotonic() - started


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def test_simulate_and_replay_stop_on_sigterm_while_streaming(tmp_path: Path, model_set: ModelSet,
                                                             lsl_outlet: Callable[..., RunningOutlet]) -> None:
    """The issue's failure was one in three: SIGTERM repeated on fresh `rohde simulate` processes."""
    times: dict[str, list[float]] = {"simulate": [], "replay": []}
    for _ in range(3):
        outlet = lsl_outlet("simulate", "--chunk-ms", "20")
        time.sleep(0.5)  # well into its push loop
        times["simulate"].append(sigterm_exit_s(outlet.child))
        assert outlet.child.process.returncode == 0, outlet.child.log_tail()
    recording = str(model_set.recording.save(tmp_path / "replay"))
    for _ in range(2):
        outlet = lsl_outlet("replay", recording)
        time.sleep(0.5)
        times["replay"].append(sigterm_exit_s(outlet.child))
        assert outlet.child.process.returncode == 0, outlet.child.log_tail()
    logger.info("SIGTERM to exit: %s", {k: [round(t, 3) for t in v] for k, v in times.items()})


def test_bench_outlet_stops_on_sigterm(tmp_path: Path, processes: ChildGroup) -> None:
    name, sid = unique_id("bench"), unique_id("bench-sid")
    ready, push_log = tmp_path / "ready.json", tmp_path / "push.npz"
    child = processes.start([sys.executable, "-m", "rohde.bench", "outlet", "--name", name, "--source-ids", sid,
                             "--n-channels", "16", "--fs-hz", "1000", "--chunk-ms", "20", "--ready-file", str(ready),
                             "--log-file", str(push_log)], log=tmp_path / "bench-outlet.log")
    child.wait_for_file(ready, timeout_s=30.0)
    wait_until_resolvable(child, name, sid)
    seconds = sigterm_exit_s(child)
    assert child.process.returncode == 0 and push_log.exists(), child.log_tail()
    logger.info("bench outlet: SIGTERM to exit %.3f s (it keeps its outlet 0.5 s for the last chunks)", seconds)


def test_demo_stops_with_its_children_on_sigterm(tmp_path: Path, processes: ChildGroup) -> None:
    demo = processes.start([ROHDE, "demo", "--quiet"], log=tmp_path / "demo.log")
    wait_for(lambda: "RoHDE demo:" in demo.log_tail() or demo.process.poll() is not None, 120, 0.5)
    assert demo.process.poll() is None, demo.log_tail()
    children = child_pids(demo.pid)
    assert len(children) == 2, children  # the simulator and the server
    seconds = sigterm_exit_s(demo)
    assert demo.process.returncode == 1 or demo.process.returncode == 0, demo.log_tail()
    assert "Stopping (SIGTERM)." in demo.log_tail()
    wait_for(lambda: all(gone(pid) for pid in children), 5, 0.05)
    logger.info("rohde demo: SIGTERM to exit %.3f s, its simulator and server stopped with it", seconds)


def _subscriber(port: int, stream_id: str, seen: list[dict[str, Any]], closes: list[tuple[int, str]],
                ready: threading.Event) -> None:
    with connect(f"ws://127.0.0.1:{port}/ws?stream={stream_id}") as ws:
        try:
            while True:
                message = json.loads(ws.recv(timeout=20))
                seen.append(message)
                if message["kind"] == "prediction":
                    ready.set()
        except ConnectionClosed as exc:
            closes.append((exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (-1, "no close frame"))


def test_serve_stops_within_a_second_telling_every_client_and_restarts_to_the_same_state(
        tmp_path: Path, model_set: ModelSet, processes: ChildGroup,
        lsl_outlet: Callable[..., RunningOutlet]) -> None:
    name = unique_id("stop")
    lsl_outlet("replay", str(model_set.recording.save(tmp_path / "replay")), name=name, source_id=name)
    base = start_server(processes, tmp_path, model_set, name)
    server = processes.children[-1]
    port = int(base.rsplit(":", 1)[1])
    clients = []
    for _ in range(3):
        seen: list[dict[str, Any]] = []
        closes: list[tuple[int, str]] = []
        ready = threading.Event()
        thread = threading.Thread(target=_subscriber, args=(port, name, seen, closes, ready), daemon=True)
        thread.start()
        clients.append((thread, seen, closes, ready))
    for _, _, _, ready in clients:
        assert ready.wait(20), "no decision reached a client"
    before = httpx.get(f"{base}/ready").json()
    seconds = sigterm_exit_s(server)
    for thread, seen, closes, _ in clients:
        thread.join(5)
        assert closes == [(1001, "The server is stopping.")], closes
        assert seen[-1]["kind"] == "status" and seen[-1]["event"] == "server_stopping"
    log = server.log.read_text()
    assert "RoHDE server stopped: every worker thread joined." in log and "did not stop within" not in log, log[-2000:]
    assert seconds < 2.0, f"the server took {seconds:.2f} s to stop"
    logger.info("rohde serve with 3 WebSocket clients and 1 stream: SIGTERM to exit %.3f s", seconds)

    # The same settings again: the same model active, the same stream found under the same id.
    base = start_server(processes, tmp_path, model_set, name)
    after = httpx.get(f"{base}/ready").json()
    assert after["model"]["name"] == before["model"]["name"] and after["model"]["onnx_sha256"] == \
        before["model"]["onnx_sha256"]
    started = time.monotonic()
    wait_for(lambda: httpx.get(f"{base}/streams").json()["streams"], 20, 0.1)
    stream = wait_for(lambda: next((s for s in httpx.get(f"{base}/streams").json()["streams"]
                                    if s["state"] == "connected" and s["windows_emitted"] > 0), None), 20, 0.1)
    assert stream["stream_id"] == name and before["streams"] == {name: "connected"}
    logger.info("restart: stream %s decided again %.2f s after /ready", name, time.monotonic() - started)


def test_health_answers_503_once_a_thread_is_down(model_set: ModelSet) -> None:
    """In-process app: the inference thread, then the watchdog, stopped under a running server."""
    from fastapi.testclient import TestClient

    from rohde.server.app import create_app
    from rohde.server.settings import load_settings

    settings = load_settings(models_dir=model_set.models_dir, model="good", stream_name=unique_id("health"),
                             marker_outlet=False, lsl_config=LSL_CONFIG)
    with TestClient(create_app(settings)) as client:
        healthy = client.get("/health")
        assert healthy.status_code == 200 and healthy.json()["status"] == "ok"
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        runtime.inference.stop()
        degraded = client.get("/health")
        assert degraded.status_code == 503
        body = degraded.json()
        assert body["status"] == "degraded" and body["threads"] == {"inference": False, "watchdog": True}
        assert set(body) == set(healthy.json())  # the same body, only the status differs
        runtime.streams.error = "RuntimeError: a scan failed"
        assert client.get("/health").json()["errors"] == {"watchdog": "RuntimeError: a scan failed"}
