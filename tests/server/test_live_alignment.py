"""Live label-free alignment: `StreamAlignment` alone, then the real app with real LSL outlets whose grid
moved by two rows (or not at all), the routes that re-estimate and switch it off, and live decisions
against the offline aligned path on the same samples."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rohde.core.alignment import AlignmentReference, GridShift, ShiftEstimate, alignment_matrix, resampling_matrix
from rohde.core.layouts import grid_layout
from rohde.core.model_package import load_model_package, write_metadata
from rohde.core.preprocessing import PreprocessingConfig, filter_recording
from rohde.core.recording import Recording
from rohde.server.app import create_app
from rohde.server.jobs import WindowJob
from rohde.server.live_alignment import StreamAlignment, expected_reference
from rohde.server.lsl_inlet import import_pylsl
from rohde.server.processes import unique_id
from rohde.server.settings import load_settings

from .conftest import LSL_CONFIG, build_package, fit_softmax, log_power, wait_for, windows_and_labels
from .test_live import outlet

pytestmark = pytest.mark.timeout(60)
TOKEN = "align-token"
ROWS, COLS = 8, 4
GESTURES = ("rest", "g1", "g2", "g3")
SEGMENT_S = 0.75  # one cycle of the four gestures: 3 s
WARMUP_S = 3.0
# Where each gesture's activity lies on the grid (row, col); rest is the floor alone.
CENTRES = {1: (2.0, 0.5), 2: (3.5, 2.5), 3: (5.0, 1.0)}


def _recording(seed: int, cycles: int) -> Recording:
    """Gestures in turn; each raises a smooth blob of the 8 x 4 grid over a smooth resting map."""
    layout = grid_layout(1, ROWS, COLS, name="1x8x4")
    rng = np.random.default_rng(seed)
    seg = int(SEGMENT_S * 1000)
    labels = np.repeat(np.tile(np.arange(len(GESTURES)), cycles), seg).astype(np.int16)
    sites = layout.channel_map()
    rows = np.array([e["row"] for e in sorted(sites, key=lambda e: e["channel"])], dtype=float)
    cols = np.array([e["col"] for e in sorted(sites, key=lambda e: e["channel"])], dtype=float)
    floor = 4.0 + 3.0 * np.exp(-((rows - 4.0) ** 2 + (cols - 1.5) ** 2) / 8.0)  # (C,)
    amplitude = np.tile(floor, (len(labels), 1))
    for g, (r0, c0) in CENTRES.items():
        amplitude[labels == g] += 40.0 * np.exp(-((rows - r0) ** 2 + (cols - c0) ** 2) / 2.0)
    samples = (rng.standard_normal(amplitude.shape) * amplitude + 300.0).astype(np.float32)
    return Recording(samples=samples, fs_hz=1000.0, layout=layout, labels=labels, gesture_names=GESTURES)


@pytest.fixture(scope="module")
def align_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`ref`: the tiny log-power model with its training data's alignment reference; `noref`: the same without."""
    root = tmp_path_factory.mktemp("align-models")
    train = _recording(seed=0, cycles=3)
    preprocessing = PreprocessingConfig(fs_hz=1000.0)
    windows, labels, norm = windows_and_labels(train, preprocessing, None, hop=10)
    weights, bias = fit_softmax(log_power(windows), labels, len(GESTURES))
    for name in ("ref", "noref"):
        build_package(root / name, train, name=name, version="1", weights=weights, bias=bias, normalization=norm,
                      preprocessing=preprocessing)
    reference = AlignmentReference.from_filtered(filter_recording(train.samples, preprocessing), train.fs_hz)
    meta = load_model_package(root / "ref").metadata
    write_metadata(root / "ref", meta.model_copy(update={"alignment": reference.to_dict()}))
    return root


def _moved(recording: Recording, rows: float) -> Recording:
    """The recording as a grid put on `rows` sites further along would see it (raw samples moved)."""
    return recording.with_samples(
        (recording.samples.astype(np.float64) @ resampling_matrix(recording.layout, GridShift(rows=rows)).T)
        .astype(np.float32))  # fmt: skip


# ----------------------------------------------------------------------------------------- pure state
def test_stream_alignment_collects_estimates_moves_windows_and_follows_the_model(align_models: Path) -> None:
    package = load_model_package(align_models / "ref")
    hop = package.windows.hop_samples(1000.0)
    stream = _moved(_recording(seed=1, cycles=1), 2.0)
    filtered = package.normalization.apply(filter_recording(stream.samples, package.preprocessing))  # (n, C)
    alignment = StreamAlignment("s", enabled=True, warmup_s=WARMUP_S - 0.5, min_score=0.9)
    assert alignment.snapshot()["state"] == "unavailable"
    alignment.use_model(package, 1)

    def job(end: int, reject: str | None = None) -> WindowJob:
        window = np.ascontiguousarray(filtered[end - 200 : end].T)
        return WindowJob(stream_id="s", generation=1, window=window, end_index=end, lsl_time=0.0, pulled_at=0.0,
                         bad_channels=(), reject_reason=reject, flags=())

    ends = list(range(200, len(filtered) + 1, hop))
    assert alignment.process(job(200, "bad_channels")).window is not None
    assert alignment.snapshot()["collected_s"] == 0.0  # a rejected window is not collected
    for end in ends:
        out = alignment.process(job(end))
    report = alignment.snapshot()
    assert report["state"] == "aligned" and report["applied"] == "shift", report
    assert report["shift"]["rows"] == pytest.approx(2.0, abs=0.3) and abs(report["shift"]["cols"]) <= 0.3
    assert report["score"] > report["score_unshifted"] + 0.05
    # The window is moved exactly as the offline path moves the samples: filtered uV through the alignment matrix.
    estimate = ShiftEstimate(GridShift(**{**report["shift"], "rotation_deg": 0.0}), report["score"],
                             report["score_unshifted"])  # fmt: skip
    matrix = alignment_matrix(package.layout, estimate)
    uv = filter_recording(stream.samples, package.preprocessing)[ends[-1] - 200 : ends[-1]] @ matrix.T
    np.testing.assert_allclose(out.window, package.normalization.apply(uv).T, rtol=1e-4, atol=1e-4)
    alignment.disable()
    assert alignment.snapshot()["state"] == "disabled" and alignment.process(job(ends[-1])).window is not None
    assert np.array_equal(alignment.process(job(ends[-1])).window, job(ends[-1]).window)
    alignment.restart()
    assert alignment.snapshot()["state"] == "collecting" and alignment.snapshot()["collected_s"] == 0.0
    alignment.use_model(load_model_package(align_models / "noref"), 2)
    report = alignment.snapshot()
    assert report["state"] == "unavailable" and "no alignment reference" in report["reason"]
    assert report["model_generation"] == 2
    off = StreamAlignment("t", enabled=False, warmup_s=1.0, min_score=0.9)
    off.use_model(package, 1)
    assert off.snapshot()["state"] == "disabled"


class DeferredExecutor(Executor):
    """Holds what is submitted until `run_all`: the shared alignment thread, made to run when the test says."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.calls.append((fn, args))
        return Future()

    def run_all(self) -> None:
        calls, self.calls = self.calls, []
        for fn, args in calls:
            fn(*args)


def test_the_estimate_runs_off_the_stream_thread_and_moves_the_windows_after_it(align_models: Path) -> None:
    # The stream's windows never wait for the search: the window that completes the warm-up and those after it
    # pass as they come until the shared thread has estimated; then they are moved as the inline estimate moves them.
    package = load_model_package(align_models / "ref")
    hop = package.windows.hop_samples(1000.0)
    stream = _moved(_recording(seed=1, cycles=1), 2.0)
    filtered = package.normalization.apply(filter_recording(stream.samples, package.preprocessing))
    pool = DeferredExecutor()
    shared = StreamAlignment("s", enabled=True, warmup_s=WARMUP_S - 0.5, min_score=0.9, executor=pool)
    inline = StreamAlignment("s", enabled=True, warmup_s=WARMUP_S - 0.5, min_score=0.9)
    for alignment in (shared, inline):
        alignment.use_model(package, 1)

    def job(end: int) -> WindowJob:
        return WindowJob(stream_id="s", generation=1, window=np.ascontiguousarray(filtered[end - 200 : end].T),
                         end_index=end, lsl_time=0.0, pulled_at=0.0, bad_channels=(), reject_reason=None, flags=())

    ends = list(range(200, len(filtered) + 1, hop))
    for end in ends[:-1]:
        inline.process(job(end))
        assert np.array_equal(shared.process(job(end)).window, job(end).window)
    assert len(pool.calls) == 1  # one estimate per warm-up, however many windows come while it runs
    assert shared.snapshot()["state"] == "collecting" and inline.snapshot()["state"] == "aligned"
    pool.run_all()
    assert shared.snapshot()["state"] == "aligned" and shared.snapshot()["shift"] == inline.snapshot()["shift"]
    np.testing.assert_array_equal(shared.process(job(ends[-1])).window, inline.process(job(ends[-1])).window)
    # An estimate still out when the stream restarts its collection is dropped, not applied to the new one.
    shared.restart()
    for end in ends[:-1]:
        shared.process(job(end))
    stale, pool.calls = pool.calls, []
    shared.restart()
    for fn, args in stale:
        fn(*args)
    assert shared.snapshot()["state"] == "collecting" and not pool.calls


def test_channels_flagged_bad_during_the_warm_up_stay_out_of_the_estimate(align_models: Path) -> None:
    """An unmoved grid whose first three rows are disturbed (large noise) through the warm-up: left in, they pull
    the estimate to a false shift; flagged bad by the quality estimate, they are left out and the grid is found
    where it is (gain only). The estimate is scored on the channels good for most of the warm-up alone."""
    package = load_model_package(align_models / "ref")
    hop = package.windows.hop_samples(1000.0)
    stream = _recording(seed=1, cycles=1)
    disturbed = tuple(c for c in range(ROWS * COLS) if c % ROWS in (0, 1, 2))  # column-major: rows 0-2
    x = stream.samples.copy()
    x[:, disturbed] += 400.0 * np.random.default_rng(0).standard_normal((len(x), len(disturbed))).astype(np.float32)
    filtered = package.normalization.apply(filter_recording(x, package.preprocessing))  # (n, C)
    reports = {}
    for flagged in (False, True):
        alignment = StreamAlignment("s", enabled=True, warmup_s=WARMUP_S - 0.5, min_score=0.9)
        alignment.use_model(package, 1)
        for end in range(200, len(filtered) + 1, hop):
            window = np.ascontiguousarray(filtered[end - 200 : end].T)
            alignment.process(WindowJob(stream_id="s", generation=1, window=window, end_index=end, lsl_time=0.0,
                                        pulled_at=0.0, bad_channels=disturbed if flagged else (), reject_reason=None,
                                        flags=()))  # fmt: skip
        reports[flagged] = alignment.snapshot()
    assert reports[False]["applied"] != "gain_only" and abs(reports[False]["shift"]["rows"]) >= 1.0, reports[False]
    clean = reports[True]
    assert clean["state"] == "aligned" and clean["applied"] == "gain_only", clean
    assert clean["shift"]["rows"] == 0.0 and clean["shift"]["cols"] == 0.0 and 0.7 < clean["shift"]["gain"] < 1.3
    assert clean["score"] > 0.9


def test_a_calibrated_package_is_aligned_against_its_calibration_placement(align_models: Path,
                                                                          tmp_path: Path) -> None:
    """`rohde calibrate` bakes the calibration session's shift into the graph and keeps the training reference:
    on that session the live estimate must find no further shift (else the shift would be undone twice)."""
    import shutil

    shutil.copytree(align_models / "ref", tmp_path / "cal")
    meta = load_model_package(tmp_path / "cal").metadata
    baked = ShiftEstimate(GridShift(rows=2.0), 0.99, 0.2).to_dict()
    write_metadata(tmp_path / "cal", meta.model_copy(update={
        "training_data": {**meta.training_data, "calibration": {"alignment": baked}}}))  # fmt: skip
    package = load_model_package(tmp_path / "cal")
    stream = _moved(_recording(seed=1, cycles=1), 2.0)
    filtered = package.normalization.apply(filter_recording(stream.samples, package.preprocessing))
    alignment = StreamAlignment("s", enabled=True, warmup_s=WARMUP_S - 0.5, min_score=0.9)
    alignment.use_model(package, 1)
    for end in range(200, len(filtered) + 1, package.windows.hop_samples(1000.0)):
        alignment.process(WindowJob(stream_id="s", generation=1, window=np.ascontiguousarray(filtered[end - 200:end].T),
                                    end_index=end, lsl_time=0.0, pulled_at=0.0, bad_channels=(), reject_reason=None,
                                    flags=()))  # fmt: skip
    report = alignment.snapshot()
    assert report["state"] == "aligned" and report["applied"] == "gain_only", report
    assert (report["shift"]["rows"], report["shift"]["cols"]) == (0.0, 0.0) and report["reference"] == "pooled"


def test_a_calibrated_package_moves_every_map_of_its_reference(align_models: Path, tmp_path: Path) -> None:
    """A reference of several subjects: the baked-in shift moves each subject's map, not the pooled one alone."""
    import shutil

    shutil.copytree(align_models / "ref", tmp_path / "cal")
    meta = load_model_package(tmp_path / "cal").metadata
    pooled = AlignmentReference.from_dict(meta.alignment or {}).activity_uv
    two = AlignmentReference(pooled, groups=(("a", pooled), ("b", tuple(reversed(pooled)))))
    baked = GridShift(rows=2.0, gain=1.5)
    write_metadata(tmp_path / "cal", meta.model_copy(update={"alignment": two.to_dict(), "training_data": {
        **meta.training_data, "calibration": {"alignment": ShiftEstimate(baked, 0.99, 0.2).to_dict()}}}))  # fmt: skip
    package = load_model_package(tmp_path / "cal")
    moved = expected_reference(package)
    matrix = resampling_matrix(package.layout, baked, include_gain=True)
    assert [name for name, _ in moved.groups] == ["a", "b"]
    for (_, got), (_, original) in zip(moved.maps(), two.maps(), strict=True):
        np.testing.assert_allclose(got, matrix @ np.asarray(original), rtol=1e-12)


# ----------------------------------------------------------------------------------------- live
@contextmanager
def _server(models: Path, stream_name: str, **overrides: Any) -> Iterator[TestClient]:
    values: dict[str, Any] = {"models_dir": models, "model": "ref", "stream_name": stream_name,
                              "resolve_interval_s": 0.2, "admin_token": TOKEN, "marker_outlet": False,
                              "lsl_config": LSL_CONFIG, "alignment_warmup_s": WARMUP_S}
    with TestClient(create_app(load_settings(**{**values, **overrides}))) as client:
        yield client


def _alignment(client: TestClient) -> dict[str, Any] | None:
    streams = client.get("/streams").json()["streams"]
    return streams[0]["alignment"] if streams else None


@pytest.mark.lsl
def test_a_grid_moved_by_two_rows_is_found_corrected_and_decided_as_offline(align_models: Path) -> None:
    name = unique_id("align")
    stream = _moved(_recording(seed=1, cycles=4), 2.0)
    pylsl = import_pylsl(LSL_CONFIG)
    with outlet(stream, name, marker_repeat_s=0.5), _server(align_models, name) as client:
        (truth_info,) = wait_for(lambda: pylsl.resolve_byprop("name", f"{name}-truth", 1, 1.0), 10)
        truth = pylsl.StreamInlet(truth_info, processing_flags=pylsl.proc_clocksync)
        truth.open_stream(timeout=5)
        collecting = wait_for(lambda: (a := _alignment(client)) and a["state"] == "collecting" and a, 10)
        assert collecting["warmup_s"] == WARMUP_S and collecting["shift"] is None
        report = wait_for(lambda: (a := _alignment(client)) and a["state"] != "collecting" and a, WARMUP_S + 6)
        assert report["state"] == "aligned" and report["applied"] == "shift", report
        assert report["shift"]["rows"] == pytest.approx(2.0, abs=0.3) and abs(report["shift"]["cols"]) <= 0.3
        assert report["score"] > 0.9 and report["score"] > report["score_unshifted"] + 0.05
        assert report["reference"] == "pooled"  # the map matched is named in /streams (this package has one)
        stream_id = client.get("/streams").json()["streams"][0]["stream_id"]
        assert client.get(f"/streams/{stream_id}/alignment").json() == _alignment(client)
        predictions = _decisions(client, stream_id, 30)
        markers, stamps = truth.pull_chunk(timeout=1.0)
        # Changes need the admin token; a re-estimate starts the collection again.
        assert client.post(f"/streams/{stream_id}/alignment").status_code == 401
        assert client.post("/streams/nope/alignment", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
        restarted = client.post(f"/streams/{stream_id}/alignment", headers={"Authorization": f"Bearer {TOKEN}"})
        assert restarted.status_code == 200 and restarted.json()["state"] == "collecting"
        assert restarted.json()["collected_s"] < 0.5 and restarted.json()["shift"] is None
        off = client.delete(f"/streams/{stream_id}/alignment", headers={"Authorization": f"Bearer {TOKEN}"})
        assert off.status_code == 200 and off.json()["state"] == "disabled"
    # Live decisions against the offline path: the same samples moved back by the same estimate, then
    # filtered from sample 0, normalised and run through the same ONNX graph.
    import onnxruntime as ort

    package = load_model_package(align_models / "ref")
    estimate = ShiftEstimate(GridShift(**{**report["shift"], "rotation_deg": 0.0}), report["score"],
                             report["score_unshifted"])  # fmt: skip
    t0 = stamps[0] - int(markers[0][2]) / 1000.0  # LSL time of the stream's sample 0
    ends = np.array([int(round((p["lsl_time"] - t0) * 1000.0)) + 1 for p in predictions])
    samples = np.tile(stream.samples, (int(np.ceil(ends.max() / stream.n_samples)), 1))[: ends.max()]
    aligned = (samples.astype(np.float64) @ alignment_matrix(package.layout, estimate).T).astype(np.float32)
    normalized = package.normalization.apply(filter_recording(aligned, package.preprocessing))
    session = ort.InferenceSession(str(package.onnx_path), providers=["CPUExecutionProvider"])
    batch = np.stack([normalized[e - 200 : e].T for e in ends])
    offline = session.run(None, {package.metadata.input_name: batch})[0]
    live = np.array([p["probabilities"] for p in predictions])
    np.testing.assert_allclose(live, offline, atol=2e-3)
    truth_labels = np.tile(stream.labels, int(np.ceil(ends.max() / stream.n_samples)))[ends - 1]
    accuracy = float(np.mean(np.argmax(live, axis=1) == truth_labels))
    unaligned = package.normalization.apply(filter_recording(samples, package.preprocessing))
    zero_shot = session.run(None, {package.metadata.input_name: np.stack([unaligned[e - 200 : e].T for e in ends])})[0]
    assert accuracy > float(np.mean(np.argmax(zero_shot, axis=1) == truth_labels)), "alignment did not help"


def _decisions(client: TestClient, stream_id: str, n: int) -> list[dict[str, Any]]:
    """`n` decisions of windows prepared after the estimate (the first few in flight are skipped)."""
    out: list[dict[str, Any]] = []
    with client.websocket_connect(f"/ws?stream={stream_id}") as ws:
        while len(out) < n + 3:
            message = ws.receive_json()
            if message["kind"] == "prediction":
                out.append(message)
    return out[3:]


@pytest.mark.lsl
def test_an_unmoved_grid_gets_the_gain_only_and_a_model_without_reference_none(align_models: Path) -> None:
    name = unique_id("align")
    with outlet(_recording(seed=2, cycles=4), name, marker_repeat_s=0.5), _server(align_models, name) as client:
        report = wait_for(lambda: (a := _alignment(client)) and a["state"] not in ("collecting", "unavailable") and a,
                          WARMUP_S + 8)  # fmt: skip
        assert report["state"] == "aligned" and report["applied"] == "gain_only", report
        assert (report["shift"]["rows"], report["shift"]["cols"]) == (0.0, 0.0)
        assert report["shift"]["gain"] == pytest.approx(1.0, abs=0.15)
        assert report["score"] == report["score_unshifted"] > 0.9
        # A hot swap starts over with the new model's reference: this one has none.
        swapped = client.put("/models/active", json={"name": "noref"}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert swapped.status_code == 200
        report = wait_for(lambda: (a := _alignment(client)) and a["model_generation"] == 2 and a, 5)
        assert report["state"] == "unavailable" and "no alignment reference" in report["reason"]
        assert report["shift"] is None and report["applied"] is None
