"""The window assembler on seeded chunks, no LSL: windows, gaps, non-finite input, bad channels, model swaps."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest

from rohde.core.model_package import ModelPackage, load_model_package
from rohde.core.preprocessing import filter_recording
from rohde.core.windows import extract_windows, window_ends
from rohde.server.ingest_config import IngestConfig
from rohde.server.jobs import WindowJob
from rohde.server.metrics import ServerMetrics, StreamCounter
from rohde.server.window_assembler import WindowAssembler

from .conftest import FS_HZ, N_CHANNELS, ModelSet

pytestmark = pytest.mark.timeout(60)


def seeded_stream(n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Samples `(n, N_CHANNELS)` float32 uV with a DC offset, and LSL timestamps `(n,)` at FS_HZ."""
    rng = np.random.default_rng(seed)
    samples = (rng.standard_normal((n, N_CHANNELS)) * 20.0 + 300.0).astype(np.float32)
    return samples, 100.0 + np.arange(n) / FS_HZ


def chunk_bounds(n: int, sizes: Iterable[int]) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for size in sizes:
        if start >= n:
            break
        bounds.append((start, min(start + size, n)))
        start += size
    return bounds


class Assembled:
    """A `WindowAssembler` under `package` for stream "s", with its jobs and metrics."""

    def __init__(self, package: ModelPackage, *, max_chunk: int = 500, config: IngestConfig | None = None) -> None:
        self.jobs: list[WindowJob] = []
        self.metrics = ServerMetrics()
        self.assembler = WindowAssembler("s", config=config or IngestConfig(), metrics=self.metrics,
                                         emit=self.jobs.append)
        self.assembler.use_model(package, 1, max_chunk=max_chunk)
        self.assembler.restart(FS_HZ)

    def push(self, samples: np.ndarray, stamps: np.ndarray, sizes: Iterable[int], *, full: bool = False) -> None:
        for start, stop in chunk_bounds(len(stamps), sizes):
            self.assembler.push(samples[start:stop], stamps[start:stop], pulled_at=0.0, full=full)

    def count(self, counter: StreamCounter) -> int:
        return self.metrics.stream_counts(counter).get("s", 0)


@pytest.fixture(scope="module")
def good(model_set: ModelSet) -> ModelPackage:
    return load_model_package(model_set.models_dir / "good")


def test_windows_do_not_depend_on_how_the_stream_is_chunked(good: ModelPackage) -> None:
    samples, stamps = seeded_stream(3000)
    rng = np.random.default_rng(1)
    chunkings = {"one sample": [1] * 3000, "outlet chunks of 7": [7] * 500, "one pull per hop": [50] * 60,
                 "largest pulls": [500] * 6, "random": rng.integers(1, 501, size=3000).tolist()}
    runs = {}
    for label, sizes in chunkings.items():
        run = Assembled(good)
        run.push(samples, stamps, sizes)
        runs[label] = run.jobs
    reference = runs.pop("one sample")
    meta = good.metadata
    ends = window_ends(3000, meta.window_samples, good.windows.hop_samples(meta.fs_hz))
    assert [job.end_index for job in reference] == ends.tolist()
    for label, jobs in runs.items():
        assert [job.end_index for job in jobs] == ends.tolist(), label
        for job, ref in zip(jobs, reference, strict=True):
            np.testing.assert_array_equal(job.window, ref.window, err_msg=label)
            assert job.lsl_time == ref.lsl_time and job.reject_reason is None and job.generation == 1
    # The same windows as the offline chain: the stream filtered from a zero state, normalised, cut.
    offline = extract_windows(good.normalization.apply(filter_recording(samples, good.preprocessing)), ends,
                              meta.window_samples)
    np.testing.assert_allclose(np.stack([job.window for job in reference]), offline, rtol=1e-5, atol=1e-5)
    assert [job.lsl_time for job in reference] == [float(stamps[end - 1]) for end in ends]


def test_gaps_inside_one_pull_are_counted_and_split(good: ModelPackage) -> None:
    # A 20 ms jump at sample 430 (short: the windows go on) and a 300 ms one at sample 800 (long: they
    # restart there), both inside one pull, then the same stream in outlet chunks of 7.
    samples, stamps = seeded_stream(1200)
    stamps = stamps + np.where(np.arange(1200) >= 430, 0.020, 0.0) + np.where(np.arange(1200) >= 800, 0.300, 0.0)
    whole, chunked = Assembled(good, max_chunk=1200), Assembled(good, max_chunk=1200)
    whole.push(samples, stamps, [1200])
    chunked.push(samples, stamps, [7] * 200)
    for run in (whole, chunked):
        assert run.count(StreamCounter.GAPS) == 2
        assert run.count(StreamCounter.MISSING_SAMPLES) == 20 + 300
        assert run.count(StreamCounter.OVERFLOWS) == 0
        assert [job.end_index for job in run.jobs] == [*range(200, 801, 50), *range(200, 401, 50)]
        assert run.assembler.samples_received == 1200
    assert [job.lsl_time for job in whole.jobs] == [job.lsl_time for job in chunked.jobs]
    assert whole.jobs[-1].lsl_time == pytest.approx(100.0 + 1199 / FS_HZ + 0.320)


def test_a_gap_after_a_full_pull_is_an_overflow(good: ModelPackage) -> None:
    samples, stamps = seeded_stream(600)
    stamps = stamps + np.where(np.arange(600) >= 300, 0.5, 0.0)
    run = Assembled(good)
    run.push(samples[:300], stamps[:300], [300], full=True)  # we were behind: liblsl dropped what followed
    run.push(samples[300:], stamps[300:], [300])
    assert (run.count(StreamCounter.GAPS), run.count(StreamCounter.OVERFLOWS)) == (1, 1)
    assert run.count(StreamCounter.MISSING_SAMPLES) == 500


def test_nonfinite_samples_are_zeroed_counted_and_reject_their_windows(good: ModelPackage) -> None:
    samples, stamps = seeded_stream(1000)
    samples[620, 3] = np.nan
    samples[621, 5] = np.inf
    run = Assembled(good)
    run.push(samples, stamps, [50] * 20)
    assert run.count(StreamCounter.NONFINITE_SAMPLES) == 2
    assert all(np.isfinite(job.window).all() for job in run.jobs)
    rejected = {job.end_index: (job.reject_reason, job.flags) for job in run.jobs if job.reject_reason}
    # Every window holding sample 620 or 621, and no other.
    assert rejected == {end: ("nonfinite_input", ("nonfinite",)) for end in (650, 700, 750, 800)}
    quality = run.assembler.quality
    assert quality is not None
    assert [ch.channel for ch in quality.channels if "nonfinite" in ch.flags] == [3, 5]


def test_too_many_flat_channels_reject_the_windows(good: ModelPackage) -> None:
    samples, stamps = seeded_stream(1000)
    samples[:, :9] = 42.0  # 9 of 16 channels flat: more than reject_bad_fraction (0.5)
    run = Assembled(good)
    run.push(samples, stamps, [50] * 20)
    # The first quality estimate comes after 500 samples; the windows after it are rejected.
    assert [job.end_index for job in run.jobs if job.reject_reason is None] == list(range(200, 501, 50))
    rejected = [job for job in run.jobs if job.reject_reason is not None]
    assert rejected and all(job.reject_reason == "bad_channels" and job.flags == ("bad_channels",)
                            for job in rejected)
    assert rejected[0].bad_channels == tuple(range(9))


def test_a_model_with_the_same_windows_keeps_them_and_another_restarts_them(model_set: ModelSet,
                                                                           good: ModelPackage) -> None:
    samples, stamps = seeded_stream(1000)
    run = Assembled(good)
    run.push(samples[:420], stamps[:420], [60] * 7)
    run.assembler.use_model(load_model_package(model_set.models_dir / "good2"), 2, max_chunk=500)
    run.push(samples[420:700], stamps[420:700], [70] * 4)
    run.assembler.use_model(load_model_package(model_set.models_dir / "long"), 3, max_chunk=500)
    run.push(samples[700:], stamps[700:], [100] * 3)
    by_generation = {g: [job.end_index for job in run.jobs if job.generation == g] for g in (1, 2, 3)}
    assert by_generation[1] == [200, 250, 300, 350, 400]
    assert by_generation[2] == [450, 500, 550, 600, 650, 700]  # no window lost at the swap
    assert by_generation[3] == [300]  # 300-sample windows counted from the swap at sample 700
