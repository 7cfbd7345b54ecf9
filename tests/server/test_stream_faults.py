"""Stream lifecycle faults with real outlets in subprocesses and a real `rohde serve`: outlets killed and
restarted with the same and a new source_id, an unrelated device with the same name, an outlet that stalls
without closing (and stays advertised), an outlet process that hangs (SIGSTOP) and resumes, a stream whose
shape does not fit the model; and lost workers retired from the list (the stream manager in-process).

Recovery times go to the log (--log-cli-level=INFO); the bounds are generous.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from rohde.server.inference import ModelManager
from rohde.server.ingest_config import IngestConfig
from rohde.server.jobs import JobQueue
from rohde.server.lsl_inlet import StreamQuery
from rohde.server.metrics import ServerMetrics
from rohde.server.processes import Child, ChildGroup, unique_id
from rohde.server.stream_manager import StreamManager

from .conftest import LSL_CONFIG, ModelSet, RunningOutlet, synthetic_recording, wait_for, wait_until_resolvable
from .test_e2e import start_server

pytestmark = [pytest.mark.lsl, pytest.mark.timeout(180)]
logger = logging.getLogger(__name__)

# An outlet that fits the `good` model and stops pushing, without closing, while the file `stall` exists.
STALLING_OUTLET = """
import sys, time
from pathlib import Path
import numpy as np
from rohde.server.lsl_inlet import import_pylsl
pylsl = import_pylsl()
name, source_id, stall = sys.argv[1], sys.argv[2], Path(sys.argv[3])
outlet = pylsl.StreamOutlet(pylsl.StreamInfo(name, "EMG", 16, 1000.0, pylsl.cf_float32, source_id), 20)
rng = np.random.default_rng(0)
while True:
    if not stall.exists():
        outlet.push_chunk((rng.standard_normal((20, 16)) * 20.0).astype(np.float32))
    time.sleep(0.02)
"""


def streams(base: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = httpx.get(f"{base}/streams", timeout=5).json()["streams"]
    return rows


def by_id(base: str) -> dict[str, dict[str, Any]]:
    return {s["stream_id"]: s for s in streams(base)}


def until_state(base: str, stream_id: str, state: str, timeout_s: float) -> float:
    """Seconds until `stream_id` is in `state` (and, when connected, has new samples)."""
    started = time.monotonic()
    first = by_id(base).get(stream_id, {}).get("samples_received", 0)

    def reached() -> bool:
        row = by_id(base).get(stream_id)
        return row is not None and row["state"] == state and (state != "connected"
                                                              or row["samples_received"] > first)

    wait_for(reached, timeout_s, 0.05)
    return time.monotonic() - started


def start_stalling_outlet(processes: ChildGroup, tmp_path: Path, name: str, source_id: str) -> tuple[Child, Path]:
    script, stall = tmp_path / "stalling_outlet.py", tmp_path / f"stall-{source_id}"
    script.write_text(STALLING_OUTLET)
    child = processes.start([sys.executable, str(script), name, source_id, str(stall)],
                            log=tmp_path / f"stalling-{source_id}.log")
    wait_until_resolvable(child, name, source_id)
    return child, stall


def test_restarts_keep_the_id_and_an_unrelated_device_never_inherits_it(
        tmp_path: Path, model_set: ModelSet, processes: ChildGroup,
        lsl_outlet: Callable[..., RunningOutlet]) -> None:
    name = unique_id("restart")
    fitting = str(model_set.recording.save(tmp_path / "fits"))
    wide = str(synthetic_recording(seed=3, cycles=1, n_channels=64).save(tmp_path / "wide"))
    outlet = lsl_outlet("replay", fitting, name=name, source_id=f"{name}-a")
    base = start_server(processes, tmp_path, model_set, name)
    stream_id = f"{name}-a"
    until_state(base, stream_id, "connected", 20)
    figures = {}
    for source_id in (f"{name}-a", f"{name}-b"):  # killed, restarted with the same source_id, then a new one
        outlet.child.process.send_signal(signal.SIGKILL)
        outlet.child.process.wait(5)
        until_state(base, stream_id, "lost", 10)
        outlet = lsl_outlet("replay", fitting, name=name, source_id=source_id)
        figures[source_id] = until_state(base, stream_id, "connected", 20)
    # An unrelated 64-channel device with the same name, and even the same source_id as the lost stream.
    outlet.child.process.send_signal(signal.SIGKILL)
    outlet.child.process.wait(5)
    until_state(base, stream_id, "lost", 10)
    lsl_outlet("replay", wide, name=name, source_id=f"{name}-b")
    other = wait_for(lambda: next((s for s in streams(base) if s["n_channels"] == 64), None), 20, 0.1)
    assert other["stream_id"] != stream_id
    assert other["state"] == "refused" and "64 channels, the model needs 16" in other["reason"]
    assert by_id(base)[stream_id]["state"] == "lost" and by_id(base)[stream_id]["n_channels"] == 16
    # The real device comes back: it takes its old id; the other keeps its own.
    lsl_outlet("replay", fitting, name=name, source_id=f"{name}-c")
    until_state(base, stream_id, "connected", 20)
    rows = by_id(base)
    assert set(rows) == {stream_id, other["stream_id"]}
    assert rows[stream_id]["lost_count"] == 3 and rows[stream_id]["recovered_count"] == 3
    logger.info("recovery after an outlet restart (s from its start): %s", {k: round(v, 2) for k, v in figures.items()})


def test_stalled_outlet_is_lost_recovers_and_a_stalled_abandoned_one_gets_no_second_worker(
        tmp_path: Path, model_set: ModelSet, processes: ChildGroup,
        lsl_outlet: Callable[..., RunningOutlet]) -> None:
    name = unique_id("stall")
    child, stall = start_stalling_outlet(processes, tmp_path, name, f"{name}-a")
    base = start_server(processes, tmp_path, model_set, name)
    stream_id = f"{name}-a"
    until_state(base, stream_id, "connected", 20)
    stall.touch()
    lost_s = until_state(base, stream_id, "lost", 10)
    time.sleep(3.0)  # several watchdog scans and retries of the silent, still advertised outlet
    assert list(by_id(base)) == [stream_id] and by_id(base)[stream_id]["lost_count"] == 1
    stall.unlink()
    recovered_s = until_state(base, stream_id, "connected", 10)
    row = by_id(base)[stream_id]
    assert row["lost_count"] == 1 and row["recovered_count"] == 1
    logger.info("stalled outlet: lost %.2f s after it stopped pushing, recovered %.2f s after it resumed",
                lost_s, recovered_s)
    # Stalled for good (still advertised) while the device comes back as a new outlet: the worker takes the
    # new one, and the abandoned outlet gets no second worker.
    stall.touch()
    until_state(base, stream_id, "lost", 10)
    lsl_outlet("replay", str(model_set.recording.save(tmp_path / "replay")), name=name, source_id=f"{name}-b")
    until_state(base, stream_id, "connected", 20)
    time.sleep(3.0)
    rows = streams(base)
    assert [r["stream_id"] for r in rows] == [stream_id] and rows[0]["source_id"] == f"{name}-b"
    assert child.process.poll() is None  # the abandoned outlet is still there


def test_hung_outlet_process_is_lost_then_recovers_on_sigcont(
        tmp_path: Path, model_set: ModelSet, processes: ChildGroup,
        lsl_outlet: Callable[..., RunningOutlet]) -> None:
    name = unique_id("hang")
    outlet = lsl_outlet("replay", str(model_set.recording.save(tmp_path / "replay")), name=name, source_id=name)
    base = start_server(processes, tmp_path, model_set, name)
    until_state(base, name, "connected", 20)
    outlet.child.process.send_signal(signal.SIGSTOP)
    try:
        lost_s = until_state(base, name, "lost", 10)
        time.sleep(4.0)  # the resolver forgets the silent outlet; retries meanwhile fail
        assert list(by_id(base)) == [name]
    finally:
        outlet.child.process.send_signal(signal.SIGCONT)
    recovered_s = until_state(base, name, "connected", 20)
    row = by_id(base)[name]
    assert row["lost_count"] == 1 and row["recovered_count"] == 1 and len(streams(base)) == 1
    logger.info("SIGSTOP: lost after %.2f s; SIGCONT: recovered after %.2f s", lost_s, recovered_s)


def test_lost_workers_are_retired_and_their_ids_never_reused(tmp_path: Path, model_set: ModelSet,
                                                            lsl_outlet: Callable[..., RunningOutlet]) -> None:
    """In-process stream manager (a short retirement time) with outlets in subprocesses."""
    name = unique_id("retire")
    fitting = str(model_set.recording.save(tmp_path / "fits"))
    metrics = ServerMetrics()
    models = ModelManager(model_set.models_dir)
    models.activate("good")
    manager = StreamManager(query=StreamQuery(name=name), models=models, jobs=JobQueue(64, metrics),
                            metrics=metrics, config=IngestConfig(lsl_config=LSL_CONFIG),
                            announce=lambda *_: None, max_streams=4, resolve_interval_s=0.2,
                            retire_lost_after_s=2.0)
    manager.start()
    try:
        outlet = lsl_outlet("replay", fitting, name=name, source_id="dev")
        wait_for(lambda: manager.states() == {"dev": "connected"}, 20)
        outlet.child.process.send_signal(signal.SIGKILL)
        outlet.child.process.wait(5)
        wait_for(lambda: manager.states() == {"dev": "lost"}, 10)
        started = time.monotonic()
        wait_for(lambda: manager.states() == {}, 10, 0.05)
        retired_s = time.monotonic() - started
        assert manager.retired == 1 and "dev" in manager.known_ids()
        # The same source_id on another device shape gets a new id; the same device again gets its own back.
        lsl_outlet("replay", str(synthetic_recording(seed=3, cycles=1, n_channels=64).save(tmp_path / "wide")),
                   name=name, source_id="dev")
        wait_for(lambda: manager.states() == {"dev#2": "refused"}, 20)
        lsl_outlet("replay", fitting, name=name, source_id="dev")
        wait_for(lambda: manager.states().get("dev") == "connected", 20)
        logger.info("a lost worker left /streams %.2f s after it was seen lost (retirement after 2 s idle)",
                    retired_s)
    finally:
        manager.stop()
