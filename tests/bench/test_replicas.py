"""Replicas in the latency section: the streams dealt over the servers, their health taken together."""

from __future__ import annotations

import asyncio

import pytest

from rohde.bench import collectors
from rohde.bench.collectors import Received, collect_replicas
from rohde.bench.config import BenchConfig
from rohde.bench.streams import _worst_health, replica_shares
from rohde.core.errors import ConfigError


def test_every_stream_goes_to_exactly_one_replica_and_no_replica_is_empty() -> None:
    ids = [f"amp-{i}" for i in range(7)]
    shares = replica_shares(ids, 3)
    assert shares == [["amp-0", "amp-3", "amp-6"], ["amp-1", "amp-4"], ["amp-2", "amp-5"]]
    assert replica_shares(ids[:2], 5) == [["amp-0"], ["amp-1"]]  # never more servers than streams
    assert replica_shares(ids, 1) == [ids]
    with pytest.raises(ConfigError, match="replicas"):
        BenchConfig(replicas=0)


def test_health_of_several_replicas_is_the_worst_and_names_a_provider_only_when_shared() -> None:
    ok = {"status": "ok", "provider": "CPUExecutionProvider"}
    degraded = {"status": "degraded", "provider": "CPUExecutionProvider", "errors": ["stream s1 lost"]}
    assert _worst_health([ok, degraded]) == degraded
    assert _worst_health([ok, ok]) == ok
    assert _worst_health([ok, {"status": "ok", "provider": "CUDAExecutionProvider"}])["provider"] is None


def test_replica_samples_add_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two servers: their decisions are pooled and their memory and CPU summed sample by sample.
    async def fake(url: str, ids: list[str], duration_s: float, pid: int, every_s: float) -> tuple:
        samples = [(float(t), 100.0 * pid, 2.0 * t * pid) for t in range(3 if pid == 1 else 4)]
        return [Received(i, 0.0, 0.0, 0.0, 0.0, 1.0) for i in ids], samples, [f"{url} error"] if pid == 2 else []

    monkeypatch.setattr(collectors, "collect_decisions", fake)
    records, mem, errors = asyncio.run(collect_replicas([("ws://a", ["s1", "s2"], 1), ("ws://b", ["s3"], 2)], 1.0))
    assert sorted(r.stream_id for r in records) == ["s1", "s2", "s3"]
    assert mem == [(0.0, 300.0, 0.0), (1.0, 300.0, 6.0), (2.0, 300.0, 12.0)]  # the shorter server's 3 samples
    assert errors == ["ws://b error"]
