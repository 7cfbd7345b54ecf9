"""The server app in-process with real LSL outlets on loopback: REST, validation, NaN, hot swap."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rohde.core.recording import Recording
from rohde.server.amplifier import LslAmplifier, RecordingSource
from rohde.server.app import create_app
from rohde.server.processes import unique_id
from rohde.server.settings import load_settings

from .conftest import LSL_CONFIG, ModelSet, synthetic_recording, wait_for

pytestmark = [pytest.mark.lsl, pytest.mark.timeout(90)]
TOKEN = "test-token"


@contextmanager
def outlet(recording: Recording, name: str, **options: Any) -> Iterator[LslAmplifier]:
    """`recording` looped on an LSL outlet named `name` (`options`: further `LslAmplifier` settings)."""
    amp = LslAmplifier(RecordingSource(recording), name=name, source_id=name, lsl_config=LSL_CONFIG, **options)
    thread = threading.Thread(target=amp.run, daemon=True)
    thread.start()
    try:
        yield amp
    finally:
        amp.stop()
        thread.join(5)


@contextmanager
def server(model_set: ModelSet, stream_name: str, **overrides: Any) -> Iterator[TestClient]:
    values: dict[str, Any] = {"models_dir": model_set.models_dir, "model": "good", "stream_name": stream_name,
                              "resolve_interval_s": 0.2, "admin_token": TOKEN, "marker_outlet": False,
                              "lsl_config": LSL_CONFIG}
    settings = load_settings(**{**values, **overrides})
    with TestClient(create_app(settings)) as client:
        yield client


def receive(ws: Any, n: int, kind: str = "prediction") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        message = json.loads(ws.receive_text())
        if message["kind"] == kind:
            out.append(message)
    return out


def stream_state(client: TestClient) -> dict[str, Any] | None:
    streams = client.get("/streams").json()["streams"]
    return streams[0] if streams else None


def test_rest_api_and_decisions(model_set: ModelSet) -> None:
    name = unique_id("rest")
    with outlet(model_set.recording, name), server(model_set, name) as client:
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["model"]["provider"] == "CPUExecutionProvider"
        assert client.get("/health").json()["status"] == "ok"
        models = client.get("/models").json()
        by_name = {m["name"]: m for m in models["models"]}
        assert by_name["good"]["valid"] and not by_name["broken"]["valid"] and models["active"] == "good"
        assert client.get("/models/active").json()["name"] == "good"
        with client.websocket_connect(f"/ws?stream={name}") as ws:
            messages = receive(ws, 10)
        first = messages[0]
        assert first["schema_version"] == 1 and first["stream_id"] == name and first["labels"] == list(
            model_set.recording.gesture_names)
        assert [m["seq"] for m in messages] == list(range(first["seq"], first["seq"] + 10))
        assert all(abs(sum(m["probabilities"]) - 1) < 1e-4 for m in messages)
        assert all(m["vote_k"] == 5 and m["confidence_threshold"] == 0.5 for m in messages)
        state = stream_state(client)
        assert state is not None and state["state"] == "connected" and state["n_channels"] == 16
        assert state["channel_labels"][0] == "G1R1C1"
        assert len(state["quality"]["channels"]) == 16
        text = client.get("/metrics").text
        assert f'rohde_windows_processed_total{{stream="{name}"}}' in text
        assert "rohde_inference_latency_seconds_bucket" in text
        series = {line.rsplit(" ", 1)[0] for line in text.splitlines()}
        assert {f'rohde_shared_thread_backlog{{thread="{t}"}}' for t in ("neighbours", "alignment")} <= series
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/health", "/ready", "/models", "/models/active", "/streams", "/metrics"} <= set(paths)
        assert "put" in paths["/models/active"]


def test_model_change_needs_token_and_refuses_invalid_package(model_set: ModelSet) -> None:
    name = unique_id("auth")
    with server(model_set, name) as client:
        assert client.put("/models/active", json={"name": "good2"}).status_code == 401
        bad_token = {"Authorization": "Bearer nope"}
        assert client.put("/models/active", json={"name": "good2"}, headers=bad_token).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        refused = client.put("/models/active", json={"name": "broken"}, headers=auth)
        assert refused.status_code == 422 and "Checksum" in refused.json()["detail"]
        assert client.put("/models/active", json={"name": "../etc"}, headers=auth).status_code == 422
        assert client.get("/models/active").json()["name"] == "good"
    with server(model_set, name, admin_token="") as client:
        disabled = client.put("/models/active", json={"name": "good2"}, headers={"Authorization": "Bearer x"})
        assert disabled.status_code == 403 and "ROHDE_ADMIN_TOKEN" in disabled.json()["detail"]


def test_missing_model_starts_not_ready(model_set: ModelSet) -> None:
    with server(model_set, unique_id("none"), model="no-such-model") as client:
        ready = client.get("/ready")
        assert ready.status_code == 503 and "no-such-model" in ready.json()["reason"]
        assert "no-such-model" in client.get("/health").json()["not_ready_reason"]
        assert client.get("/models/active").status_code == 404


@pytest.mark.parametrize(("n_channels", "fs_hz", "expected"), [
    (8, 1000.0, "it has 8 channels, the model needs 16"),
    (16, 500.0, "its nominal rate is 500 Hz, the model needs 1000 Hz"),
])
def test_mismatched_stream_is_refused_with_reason(model_set: ModelSet, n_channels: int, fs_hz: float,
                                                  expected: str) -> None:
    name = unique_id("mismatch")
    recording = synthetic_recording(seed=3, cycles=1, n_channels=n_channels, fs_hz=fs_hz)
    with server(model_set, name) as client:
        with outlet(recording, name):
            with client.websocket_connect("/ws") as ws:
                status = receive(ws, 1, kind="status")  # hello
                while status[-1]["event"] == "hello":
                    status = receive(ws, 1, kind="status")
            assert status[-1]["event"] == "stream_refused" and expected in status[-1]["detail"]
            state = wait_for(lambda: stream_state(client), 5)
            assert state["state"] == "refused" and expected in state["reason"]
            assert "rohde_windows_processed_total{" not in client.get("/metrics").text
        # Once the refused outlet is gone, the server forgets it.
        wait_for(lambda: stream_state(client) is None, 10)


def test_nonfinite_samples_reject_decisions(model_set: ModelSet) -> None:
    name = unique_id("nan")
    recording = synthetic_recording(seed=4, cycles=1)
    samples = recording.samples.copy()
    samples[1000:1003, 2] = np.nan
    samples[5000, 7] = np.inf
    recording = recording.with_samples(samples)
    with outlet(recording, name), server(model_set, name) as client, client.websocket_connect("/ws") as ws:
        messages = receive(ws, 60)
    flagged = [m for m in messages if "nonfinite" in m["condition_flags"]]
    clean = [m for m in messages if not m["condition_flags"]]
    assert flagged and clean  # the stream goes on after the NaN, and windows without NaN are clean again
    assert all(m["rejected"] and m["reject_reason"] == "nonfinite_input" for m in flagged)
    assert all(np.isfinite(m["probabilities"]).all() for m in messages)
    # The quality monitor names the channel once its next estimate (every 250 ms) has seen the NaN: in the
    # windows after it, not necessarily in the few flagged ones, whose list is the estimate of the pull before.
    assert any(2 in m["bad_channels"] or 7 in m["bad_channels"] for m in messages)


def test_hot_swap_loses_no_window_and_never_mixes(model_set: ModelSet) -> None:
    name = unique_id("swap")
    with outlet(model_set.recording, name), server(model_set, name) as client:
        with client.websocket_connect(f"/ws?stream={name}") as ws:
            before = receive(ws, 5)
            swapped = client.put("/models/active", json={"name": "good2"},
                                 headers={"Authorization": f"Bearer {TOKEN}"})
            assert swapped.status_code == 200 and swapped.json()["generation"] == 2
            after = receive(ws, 25)
    messages = before + after
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no window lost
    models = [m["model_name"] for m in messages]
    switch = models.index("good2")
    assert set(models[:switch]) == {"good"} and set(models[switch:]) == {"good2"}  # one clean switch


def test_decisions_are_published_as_lsl_markers(model_set: ModelSet) -> None:
    from rohde.server.lsl_inlet import import_pylsl

    name, marker_name = unique_id("markers"), unique_id("decisions")
    pylsl = import_pylsl(LSL_CONFIG)
    with outlet(model_set.recording, name), server(model_set, name, marker_outlet=True,
                                                   marker_stream_name=marker_name):
        (info,) = wait_for(lambda: pylsl.resolve_byprop("name", marker_name, 1, 1.0), 10)
        inlet = pylsl.StreamInlet(info)
        inlet.open_stream(timeout=5)
        markers = wait_for(lambda: inlet.pull_chunk(timeout=0.5)[0], 10)
    decision = json.loads(markers[0][0])
    assert decision["stream_id"] == name and decision["gesture"] in model_set.recording.gesture_names


def test_timestamp_gap_is_counted_and_stream_continues(model_set: ModelSet) -> None:
    from rohde.server.lsl_inlet import import_pylsl

    pylsl = import_pylsl(LSL_CONFIG)
    name = unique_id("gap")
    info = pylsl.StreamInfo(name, "EMG", 16, 1000.0, pylsl.cf_float32, name)
    emg = pylsl.StreamOutlet(info, 20)
    samples = model_set.recording.samples
    stop = threading.Event()

    def push() -> None:
        # 20-sample chunks in real time; after 3 s the timestamps jump by 300 ms (300 samples lost).
        t0, sent, skipped = pylsl.local_clock(), 0, 0
        while not stop.is_set() and sent < 7000:
            if sent == 3000 and not skipped:
                skipped = 300
            stamp = t0 + (sent + skipped + 19) / 1000.0
            emg.push_chunk(samples[sent % 8000 : sent % 8000 + 20], stamp)
            sent += 20
            stop.wait(max(0.0, t0 + (sent + skipped) / 1000.0 - pylsl.local_clock()))

    pusher = threading.Thread(target=push, daemon=True)
    try:
        with server(model_set, name) as client:
            pusher.start()
            wait_for(lambda: f'rohde_stream_gaps_total{{stream="{name}"}} 1' in client.get("/metrics").text, 15)
            text = client.get("/metrics").text
            assert f'rohde_stream_missing_samples_total{{stream="{name}"}} 300' in text
            before = stream_state(client)["windows_emitted"]  # type: ignore[index]
            wait_for(lambda: stream_state(client)["windows_emitted"] > before + 5, 5)  # type: ignore[index]
    finally:
        stop.set()
        pusher.join(5)


def test_hot_swap_to_other_windows_runs_every_prepared_window(model_set: ModelSet) -> None:
    name = unique_id("swap-long")
    with outlet(model_set.recording, name), server(model_set, name) as client:
        with client.websocket_connect(f"/ws?stream={name}") as ws:
            before = receive(ws, 5)
            swapped = client.put("/models/active", json={"name": "long"},
                                 headers={"Authorization": f"Bearer {TOKEN}"})
            assert swapped.status_code == 200 and swapped.json()["window_samples"] == 300
            after = receive(ws, 15)
        state = stream_state(client)
        assert state is not None and state["model_generation"] == 2
        text = client.get("/metrics").text
    messages = before + after
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    models = [m["model_name"] for m in messages]
    switch = models.index("long")
    assert set(models[:switch]) == {"good"} and set(models[switch:]) == {"long"}
    assert "rohde_windows_dropped_total 0" in text  # each window prepared for the old model ran on it
