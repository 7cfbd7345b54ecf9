"""The thin LSL layer against real outlets on loopback: queries, resolving, descriptions, the check of
a stream against a model, and pulling."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rohde.core.errors import StreamMismatchError
from rohde.core.model_package import load_model_package
from rohde.server.amplifier import LslAmplifier, RecordingSource
from rohde.server.lsl_inlet import (
    InletReader,
    StreamDescription,
    StreamQuery,
    StreamResolver,
    check_stream_fits_model,
    import_pylsl,
    resolve,
)
from rohde.server.processes import unique_id

from .conftest import FS_HZ, LSL_CONFIG, N_CHANNELS, ModelSet, synthetic_recording, wait_for

pytestmark = [pytest.mark.lsl, pytest.mark.timeout(60)]
RECORDING = synthetic_recording(seed=5, cycles=1)


def test_query_predicates() -> None:
    assert StreamQuery().predicate() == "count(channel_format)>=0"  # every stream
    assert StreamQuery(name="amp").predicate() == "name='amp'"
    upper = "translate(type,'abcdefghijklmnopqrstuvwxyz','ABCDEFGHIJKLMNOPQRSTUVWXYZ')"
    assert StreamQuery(type="EMG", source_id="sn-1").predicate() == f"{upper}='EMG' and source_id='sn-1'"
    full = StreamQuery(name="amp", type=("EMG", "ExG"), source_id="sn-1", channels="0-63")
    assert full.predicate() == f"name='amp' and ({upper}='EMG' or {upper}='EXG') and source_id='sn-1'"
    assert full.describe() == "name='amp' and type in EMG, ExG and source_id='sn-1'; channels 0-63"
    assert StreamQuery(type=()).type is None and StreamQuery(type=(" EMG ", "")).type == ("EMG",)
    assert StreamQuery(name="it's").predicate() == 'name="it\'s"'  # quoted with the quote it lacks


def resolve_n(query: StreamQuery, n: int) -> list[Any]:
    """`resolve` until exactly `n` streams answer (a loaded machine can answer late)."""
    deadline = time.monotonic() + 10.0
    while len(found := resolve(query, timeout_s=1.0, lsl_config=LSL_CONFIG)) != n:
        if time.monotonic() > deadline:
            pytest.fail(f"{len(found)} streams answer {query.predicate()!r}, expected {n}.")
    return found


@pytest.fixture
def amplifier() -> Iterator[LslAmplifier]:
    """An in-process outlet (16 channels, 1000 Hz, with channel labels) of a unique name, type and
    source_id; nothing is pushed until a test runs it."""
    name = unique_id("inlet")
    amp = LslAmplifier(RecordingSource(RECORDING), name=name, source_id=f"{name}-sid", stream_type=f"{name}-type",
                       markers=False, lsl_config=LSL_CONFIG)
    yield amp
    amp.close()


@pytest.mark.parametrize("by", ["name", "type", "source_id", "all"])
def test_resolve_finds_the_outlet(amplifier: LslAmplifier, by: str) -> None:
    values = {"name": amplifier.name, "type": f"{amplifier.name}-type", "source_id": amplifier.source_id}
    query = StreamQuery(**values) if by == "all" else StreamQuery(**{by: values[by]})  # type: ignore[arg-type]
    (info,) = resolve_n(query, 1)
    desc = StreamDescription.from_info(info)
    assert (desc.name, desc.type, desc.source_id) == (values["name"], values["type"], values["source_id"])
    assert (desc.n_channels, desc.fs_hz, desc.channel_format) == (N_CHANNELS, FS_HZ, "float32")
    assert desc.uid and desc.hostname


def test_resolve_without_a_match_returns_nothing(amplifier: LslAmplifier) -> None:
    query = StreamQuery(name=amplifier.name, source_id="another-source")
    assert resolve(query, timeout_s=1.0, lsl_config=LSL_CONFIG) == []


def test_continuous_resolver_lists_the_outlet(amplifier: LslAmplifier) -> None:
    resolver = StreamResolver(StreamQuery(source_id=amplifier.source_id), lsl_config=LSL_CONFIG)
    try:
        (info,) = wait_for(resolver.results, 10)
        assert info.name() == amplifier.name
    finally:
        resolver.close()


def test_inlet_reads_the_description_and_pulls_the_samples(amplifier: LslAmplifier) -> None:
    (info,) = resolve_n(StreamQuery(source_id=amplifier.source_id), 1)
    assert StreamDescription.from_info(info).channel_labels == ()  # resolver results carry no desc
    reader = InletReader(info, buffer_s=2, max_chunk=200, lsl_config=LSL_CONFIG)
    try:
        reader.open(5.0)
        desc = reader.description
        assert desc.channel_labels == tuple(amplifier.source.layout.channel_labels())
        assert desc.channel_labels[0] == "G1R1C1" and len(desc.channel_labels) == N_CHANNELS
        with pytest.raises(ValueError, match=r"between 1 and max_chunk \(200\), got 201"):
            reader.pull(0.1, min_samples=201)
        sent = amplifier.run(duration_s=0.15)
        samples, stamps = reader.pull(2.0, min_samples=sent)
        assert sent == 150 and samples.shape == (sent, N_CHANNELS) and samples.dtype == np.float32
        np.testing.assert_array_equal(samples, RECORDING.samples[:sent])
        np.testing.assert_allclose(np.diff(stamps), 1 / FS_HZ, atol=1e-9)  # regular stamps
        assert reader.pull()[1].size == 0  # nothing more now
    finally:
        reader.close()


def stream_outlet(pylsl: Any, *, kind: str, n_channels: int, fs_hz: float, fmt: str) -> Any:
    name = unique_id(f"fit-{n_channels}-{fs_hz:g}-{fmt}")
    return pylsl.StreamOutlet(pylsl.StreamInfo(name, kind, n_channels, fs_hz, fmt, name))


def test_streams_are_checked_against_the_model(model_set: ModelSet) -> None:
    meta = load_model_package(model_set.models_dir / "good").metadata
    pylsl = import_pylsl(LSL_CONFIG)
    kind = unique_id("fit")
    outlets = [stream_outlet(pylsl, kind=kind, n_channels=n, fs_hz=fs, fmt=fmt)  # noqa: F841 (kept alive)
               for n, fs, fmt in [(16, 1000.0, "float32"), (8, 1000.0, "float32"), (16, 500.0, "float32"),
                                  (8, 500.0, "int16")]]
    found = {
        (d.n_channels, d.fs_hz, d.channel_format): d
        for d in map(StreamDescription.from_info, resolve_n(StreamQuery(type=kind), 4))
    }
    assert len(found) == 4
    check_stream_fits_model(found[(16, 1000.0, "float32")], meta)  # fits: no error
    with pytest.raises(StreamMismatchError) as refused:
        check_stream_fits_model(found[(8, 1000.0, "float32")], meta)
    assert str(refused.value).endswith("is refused for model 'good': it has 8 channels, the model needs 16.")
    with pytest.raises(StreamMismatchError, match="its nominal rate is 500 Hz, the model needs 1000 Hz") as refused:
        check_stream_fits_model(found[(16, 500.0, "float32")], meta)
    assert found[(16, 500.0, "float32")].source_id in str(refused.value)
    with pytest.raises(StreamMismatchError) as refused:
        check_stream_fits_model(found[(8, 500.0, "int16")], meta)
    assert str(refused.value).endswith(
        "it has 8 channels, the model needs 16; its nominal rate is 500 Hz, the model needs 1000 Hz.")


def test_pull_raises_connection_error_when_the_outlet_is_gone() -> None:
    pylsl = import_pylsl(LSL_CONFIG)
    name = unique_id("gone")
    outlet = pylsl.StreamOutlet(pylsl.StreamInfo(name, "EMG", 2, 100.0, "float32", name))
    (info,) = resolve_n(StreamQuery(source_id=name), 1)
    reader = InletReader(info, buffer_s=2, max_chunk=10, lsl_config=LSL_CONFIG)
    reader.open(5.0)
    outlet.push_chunk(np.ones((3, 2), np.float32))
    assert len(reader.pull(2.0, min_samples=3)[1]) == 3

    def lost() -> str | None:
        try:
            reader.pull(0.1)
        except ConnectionError as exc:
            return str(exc)
        return None

    del outlet  # destroys the outlet; liblsl tells the inlet
    try:
        assert f"Stream {name!r} was lost" in wait_for(lost, 10)
    finally:
        reader.close()
