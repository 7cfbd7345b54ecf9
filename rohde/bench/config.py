"""What one `rohde bench` run measures, and the server settings it changes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rohde.core.errors import ConfigError
from rohde.server.settings import default_lsl_config

REPO_ROOT = Path(__file__).resolve().parents[2]
LSL_CONFIG = default_lsl_config()
SECTIONS = ("inference", "ingestion", "latency", "soak")
P99_LIMIT_MS = 50.0  # capacity criterion from the specification
# Ingestion readers compared. pylsl_wait: the pylsl + sosfilt reader, but waiting in liblsl for the
# next chunk (`pull_chunk(timeout, min_samples=1)`) instead of polling every 1 ms.
INGEST_KINDS = ("ours", "mne_lsl", "pylsl_sosfilt", "pylsl_plain", "pylsl_wait")


@dataclass(frozen=True)
class BenchConfig:
    """What one `rohde bench` run measures and for how long."""

    model: Path | None = None  # model package folder; None: models/rohde-default, else a random-weight CNN built here
    out_dir: Path = REPO_ROOT / "bench"  # results.json and RESULTS.md go here
    sections: tuple[str, ...] = SECTIONS  # which sections to run
    latency_streams: tuple[int, ...] = (1, 8, 32)  # stream counts with a full latency table
    capacity_probes: int = 2  # further stream counts tried, bisecting between the largest pass and smallest failure
    step_s: float = 25.0  # measured seconds per stream count (after the warm-up)
    warmup_s: float = 3.0  # seconds of decisions ignored after every stream is connected
    soak_s: float = 600.0  # memory soak duration
    soak_streams: int = 8  # streams during the soak
    chunk_ms: float = 10.0  # the outlets push a chunk this often
    outlets_per_process: int = 8  # outlets sharing one outlet process
    ingest_s: float = 20.0  # measured seconds per ingestion consumer
    ingest_kinds: tuple[str, ...] = INGEST_KINDS  # ingestion readers compared
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # inference batch sizes
    inference_s: float = 2.0  # time spent timing each (engine, batch size) cell
    gpu: bool = False  # run inference and latency with the CUDA provider (and IO binding)
    pull_interval_ms: float | None = None  # server setting for the latency runs; None = the server default
    quality_interval_s: float | None = None  # server setting for the latency runs; None = the server default
    replicas: int = 1  # latency and soak: servers on this machine the streams are dealt over by source_id
    label: str = ""  # key of this run in results.json; default "cpu" or "gpu"
    merge: bool = False  # replace only the measured sections of the stored run with this label
    compare_to: str = ""  # label of the stored run RESULTS.md puts beside this one (default "cpu"; "none": no other)
    command: str = ""  # the command line, recorded with the figures

    def __post_init__(self) -> None:
        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown:
            raise ConfigError(f"Unknown bench sections {unknown}; choose from {list(SECTIONS)}.")
        if min(self.latency_streams + (self.soak_streams,), default=1) < 1 or self.capacity_probes < 0:
            raise ConfigError("Stream counts must be at least 1 and capacity_probes at least 0.")
        if self.replicas < 1:
            raise ConfigError(f"replicas must be at least 1, got {self.replicas}.")
        if self.step_s <= 0 or self.soak_s <= 0 or self.ingest_s <= 0 or self.chunk_ms <= 0:
            raise ConfigError("step_s, soak_s, ingest_s and chunk_ms must be positive.")
        bad_kinds = [k for k in self.ingest_kinds if k not in INGEST_KINDS]
        if bad_kinds:
            raise ConfigError(f"Unknown ingestion readers {bad_kinds}; choose from {list(INGEST_KINDS)}.")


def server_overrides(config: BenchConfig) -> dict[str, str]:
    """`ROHDE_*` settings the latency and soak servers run with (only those the bench changes)."""
    env: dict[str, str] = {}
    if config.gpu:
        env["ROHDE_PROVIDERS"] = "CUDAExecutionProvider,CPUExecutionProvider"
        env["ROHDE_REQUIRE_GPU"] = "true"  # a server whose session falls back to CPU refuses to start
    if config.pull_interval_ms is not None:
        env["ROHDE_PULL_INTERVAL_MS"] = str(config.pull_interval_ms)
    if config.quality_interval_s is not None:
        env["ROHDE_QUALITY_INTERVAL_S"] = str(config.quality_interval_s)
    return env
