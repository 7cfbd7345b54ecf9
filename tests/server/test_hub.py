"""WebSocket fan-out: per-client bounded queues (a slow client loses its oldest messages and never
stalls the others) and per-stream filtering."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from rohde.server.hub import Client, Hub
from rohde.server.messages import PredictionMessage, StatusMessage

pytestmark = pytest.mark.timeout(60)


def _prediction(stream: str, seq: int) -> PredictionMessage:
    return PredictionMessage(
        stream_id=stream, seq=seq, lsl_time=1.0, server_time=time.time(), gesture="a", gesture_index=0,
        confidence=0.9, window_gesture="a", probabilities=[0.9, 0.1], labels=["a", "b"], rejected=False,
        vote_k=3, confidence_threshold=0.5, latency_ms=1.0, model_name="m", model_version="1", model_generation=1,
        bad_channels=[],
    )


def test_slow_client_loses_oldest_and_never_stalls_others() -> None:
    dropped: list[int] = []

    async def scenario() -> tuple[list[int], list[int], float]:
        hub = Hub(queue_size=8, on_drop=dropped.append)
        hub.bind(asyncio.get_running_loop())
        fast, slow = hub.register(), hub.register()
        fast_seen: list[int] = []
        slow_seen: list[int] = []

        async def reader(client: Client, seen: list[int], delay: float) -> None:
            while len(seen) < 200 and (not seen or seen[-1] < 199):
                text = await hub.next_message(client)
                seen.append(json.loads(text)["seq"])
                await asyncio.sleep(delay)

        tasks = [asyncio.create_task(reader(fast, fast_seen, 0)), asyncio.create_task(reader(slow, slow_seen, 0.02))]
        started = time.perf_counter()
        for seq in range(200):
            hub.publish(_prediction("s", seq))  # never awaits a client
            await asyncio.sleep(0.001)
        publish_s = time.perf_counter() - started
        await asyncio.wait_for(tasks[0], 5)
        await asyncio.wait_for(tasks[1], 10)
        return fast_seen, slow_seen, publish_s

    fast_seen, slow_seen, publish_s = asyncio.run(scenario())
    assert fast_seen == list(range(200))
    assert slow_seen[-1] == 199 and len(slow_seen) < 200  # lost the oldest, kept the newest
    assert sum(dropped) == 200 - len(slow_seen)
    assert publish_s < 2.0


def test_hub_filters_by_stream() -> None:
    async def scenario() -> list[str]:
        hub = Hub(queue_size=4)
        only_b = hub.register("b")
        hub.publish(_prediction("a", 0))
        hub.publish(_prediction("b", 0))
        hub.publish(StatusMessage(event="model_changed", server_time=0.0))
        return [json.loads(await hub.next_message(only_b)).get("stream_id") for _ in range(2)]

    assert asyncio.run(scenario()) == ["b", None]


def test_status_of_another_stream_is_filtered_out() -> None:
    # Status messages say their stream like predictions do; one about stream "a" skips a client of "b".
    hub = Hub(queue_size=4)
    only_b, everything = hub.register("b"), hub.register()
    hub.publish(StatusMessage(event="stream_lost", server_time=0.0, stream_id="a"))
    assert (len(only_b.queue), len(everything.queue), hub.published) == (0, 1, 1)


def test_a_batch_published_from_another_thread_arrives_in_order() -> None:
    async def scenario() -> list[int]:
        hub = Hub(queue_size=16)
        hub.bind(asyncio.get_running_loop())
        client = hub.register()
        sender = threading.Thread(target=hub.publish_many_threadsafe, args=([_prediction("s", k) for k in range(5)],))
        sender.start()
        seen = [json.loads(await asyncio.wait_for(hub.next_message(client), 5))["seq"] for _ in range(5)]
        sender.join()
        return seen

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]
