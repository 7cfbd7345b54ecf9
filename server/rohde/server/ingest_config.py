"""How one stream is pulled, checked and windowed: the ingestion defaults, defined once.

`ServerSettings` takes its defaults for these knobs from here, under the same field names, so
`ServerSettings.ingest_config` maps them by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rohde.core.alignment import MIN_SCORE
from rohde.core.quality_monitor import QualityThresholds


@dataclass(frozen=True)
class IngestConfig:
    inlet_buffer_s: int = 10  # liblsl inlet buffer; older samples are dropped on overflow
    max_chunk_s: float = 0.5  # largest pull, in seconds of samples
    pull_interval_ms: float = 2.0  # idle sleep after a pull that came back empty
    pull_wait_s: float = 0.1  # longest wait in liblsl for the next window's samples (> the largest gap between
    # window ends, so one wake per window); bounds how late a stop or a silent stream is seen
    stale_after_s: float = 1.0  # silence after which a connected stream is lost
    gap_tolerance_samples: int = 4  # timestamp jumps beyond this many sample periods are gaps ...
    # ... unless the stamps come back to the sample grid within this time (ms): jitter. Outlets and drivers that
    # stamp each block on arrival (USB frames, blocks of a few ms, a push delayed by the scheduler on a loaded
    # machine: tens of ms) make stamps jump late and back, which is no loss. Lost samples keep the stamps late.
    jitter_tolerance_ms: float = 100.0
    reset_after_gap_ms: float = 100.0  # longer gaps restart the filter and the windows
    # |sample| beyond this (uV) is outside the physical input range, like NaN: replaced before the filter and its
    # windows rejected. Surface EMG stays below ~10 mV and amplifiers saturate well below 1e5 uV (100 mV), so
    # nothing real is lost, while a finite 1e30 uV burst can no longer ring through the filter state for seconds.
    max_abs_uv: float = 1e5
    reject_bad_fraction: float = 0.5  # share of flat/saturated/non-finite channels that rejects a window
    open_timeout_s: float = 2.0  # how long to wait for an inlet to connect
    lsl_config: Path | None = None  # LSLAPICFG used when none is set; None leaves liblsl's own
    # Label-free alignment of each stream to the model's training grid (`live_alignment.py`), for models whose
    # package carries an alignment reference; a grid that did not move snaps to no shift (the gain alone).
    alignment: bool = True
    alignment_warmup_s: float = 30.0  # filtered signal collected before the estimate (one cycle of the gestures)
    alignment_min_score: float = MIN_SCORE  # map correlation under which an estimate is not applied
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    # The neighbour detector of every stream runs on one shared thread, off the streams' own (QualityMonitor);
    # False: in each stream's thread (the in-process cost benchmark, which times each stage where it runs).
    neighbour_thread: bool = True
