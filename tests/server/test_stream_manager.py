"""The stream manager's watchdog with real outlets on loopback: streams that appear get workers up to
`max_streams`, a vanished one is lost, and the same device coming back is handed to the worker it had."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from rohde.server.amplifier import LslAmplifier, RecordingSource
from rohde.server.inference import ModelManager
from rohde.server.ingest_config import IngestConfig
from rohde.server.jobs import JobQueue
from rohde.server.lsl_inlet import StreamQuery
from rohde.server.metrics import ServerMetrics
from rohde.server.processes import unique_id
from rohde.server.stream_manager import StreamManager
from rohde.server.stream_worker import StreamState

from .conftest import LSL_CONFIG, ModelSet, synthetic_recording, wait_for

pytestmark = [pytest.mark.lsl, pytest.mark.timeout(60)]


class Amplifier:
    """An in-process `LslAmplifier` that fits the `good` model, playing a recording in real time on its
    own thread until `close`, which destroys its outlet (inlets see the stream end)."""

    def __init__(self, stream_type: str, name: str, source_id: str) -> None:
        self.source_id = source_id
        self.amp = LslAmplifier(RecordingSource(synthetic_recording(seed=6, cycles=1)), name=name,
                                source_id=source_id, stream_type=stream_type, markers=False, lsl_config=LSL_CONFIG)
        self._thread = threading.Thread(target=self.amp.run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.amp.stop()
        self._thread.join(5)
        self.amp.close()


@pytest.fixture
def amplifiers(stream_type: str) -> Iterator[Callable[..., Amplifier]]:
    """Starts amplifiers of `stream_type` (unique name and source_id unless given); all are closed at the
    test's end."""
    opened: list[Amplifier] = []

    def start(*, name: str | None = None, source_id: str | None = None) -> Amplifier:
        name = name or unique_id("amp")
        opened.append(Amplifier(stream_type, name, source_id or name))
        return opened[-1]

    yield start
    for amplifier in opened:
        amplifier.close()


@pytest.fixture
def stream_type() -> str:
    return unique_id("EMG")


Events = list[tuple[str, str, str | None]]


@pytest.fixture
def manager(model_set: ModelSet, stream_type: str) -> Iterator[tuple[StreamManager, Events]]:
    """A running manager for streams of `stream_type`, serving at most two, with the `good` model; and
    the (event, stream_id, source_id) it announced."""
    models = ModelManager(model_set.models_dir)
    models.activate("good")
    metrics = ServerMetrics()
    events: Events = []
    streams = StreamManager(query=StreamQuery(type=stream_type), models=models, jobs=JobQueue(1000, metrics),
                            metrics=metrics, config=IngestConfig(lsl_config=LSL_CONFIG),
                            announce=lambda event, stream_id, detail, source_id: events.append(
                                (event, stream_id, source_id)),
                            max_streams=2, resolve_interval_s=0.2)
    streams.start()
    yield streams, events
    streams.stop()
    assert not streams.alive


def test_streams_that_appear_get_one_worker_each_up_to_max_streams(
        manager: tuple[StreamManager, Events], amplifiers: Callable[..., Amplifier]) -> None:
    streams, events = manager
    wait_for(lambda: streams.scans >= 2, 10)
    assert streams.workers == {}  # nothing to serve yet
    source_ids = {amplifiers().source_id for _ in range(3)}
    wait_for(lambda: list(streams.states().values()) == ["connected", "connected"], 20)
    scans = streams.scans
    wait_for(lambda: streams.scans >= scans + 3, 10)  # later scans add no third worker
    assert len(streams.workers) == 2 and streams.error is None
    served = set(streams.workers)
    assert served < source_ids  # stream ids are the source_ids
    assert {(sid, src) for event, sid, src in events if event == "stream_connected"} == {(s, s) for s in served}
    for worker in streams.workers.values():
        wait_for(lambda w=worker: w.windows_emitted > 0, 10)  # data flows into windows


def test_a_vanished_stream_is_lost_and_the_same_device_returns_to_its_worker(
        manager: tuple[StreamManager, Events], amplifiers: Callable[..., Amplifier]) -> None:
    streams, events = manager
    first = amplifiers()
    source_id = first.source_id
    wait_for(lambda: streams.states() == {source_id: "connected"}, 20)
    worker = streams.workers[source_id]
    first_uid = worker.uid
    first.close()
    wait_for(lambda: worker.state == StreamState.LOST, 10)
    assert worker.lost_count == 1 and worker.uid is None
    assert ("stream_lost", source_id, source_id) in events
    scans = streams.scans
    wait_for(lambda: streams.scans >= scans + 3, 10)
    assert streams.states() == {source_id: "lost"}  # the vanished outlet gets no new worker
    # The amplifier comes back: a new outlet (new uid) of the same device (name, type, source_id, shape).
    amplifiers(name=first.amp.name, source_id=source_id)
    wait_for(lambda: worker.state == StreamState.CONNECTED, 20)
    assert streams.workers == {source_id: worker} and worker.recovered_count == 1
    assert worker.uid is not None and worker.uid != first_uid
    assert [event for event, _, _ in events] == ["stream_connected", "stream_lost", "stream_recovered"]
