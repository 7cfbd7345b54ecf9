"""How one stream is pulled, checked and windowed: the ingestion defaults, defined once.

`ServerSettings` takes its defaults for these knobs from here, under the same field names, so
`IngestConfig.from_settings` maps them by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from rohde.server.quality import QualityThresholds

if TYPE_CHECKING:
    from rohde.server.settings import ServerSettings


@dataclass(frozen=True)
class IngestConfig:
    inlet_buffer_s: int = 10  # liblsl inlet buffer; older samples are dropped on overflow
    max_chunk_s: float = 0.5  # largest pull, in seconds of samples
    pull_interval_ms: float = 2.0  # idle sleep after a pull that came back empty
    pull_wait_s: float = 0.1  # longest wait in liblsl for the next window's samples (> the largest gap between
    # window ends, so one wake per window); bounds how late a stop or a silent stream is seen
    stale_after_s: float = 1.0  # silence after which a connected stream is lost
    gap_tolerance_samples: int = 4  # timestamp jumps beyond this many sample periods are gaps
    reset_after_gap_ms: float = 100.0  # longer gaps restart the filter and the windows
    reject_bad_fraction: float = 0.5  # share of flat/saturated/non-finite channels that rejects a window
    open_timeout_s: float = 2.0  # how long to wait for an inlet to connect
    lsl_config: Path | None = None  # LSLAPICFG used when none is set; None leaves liblsl's own
    quality: QualityThresholds = field(default_factory=QualityThresholds)

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> IngestConfig:
        """The settings' values of every field they share with this config (same name, same unit)."""
        shared = settings.model_dump(include={f.name for f in fields(cls)})
        return cls(**shared, quality=QualityThresholds.from_settings(settings))
