"""A noise outlet that injects one fault when told: the child role
`python -m rohde.reliability outlet`, and `start_fault_outlet`, which starts it and waits for it.

The bench's outlets push clean noise only; this one can also send NaN, Inf, huge finite values,
zeros or rail-clipped samples, skip samples (a gap), go silent (a stall), deliver a second of samples
at once (a burst), run its clock fast or slow (drift) or push at jittered times. Sample i of the
stream is due, and stamped, at `t0 + i / (fs_hz * (1 + ppm * 1e-6))` on the LSL local clock, so a
decision's `lsl_time` places its window against the fault's start and end, which the outlet writes
when the parent triggers the fault (SIGUSR1) once the server is deciding.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rohde.bench.config import LSL_CONFIG
from rohde.core.errors import ConfigError
from rohde.server.processes import Child, start_child

FAULT_KINDS = ("none", "nan", "inf", "huge", "zero", "saturated", "gap", "stall", "burst")
SIGNAL_FAULTS = ("nan", "inf", "huge", "zero", "saturated")  # samples replaced, timing untouched
HUGE_UV = 1e30  # a finite value no amplifier sends
RAIL_UV = 6000.0  # the rail of a saturated channel (the quality monitor's default saturation level)
NOISE_UV = 20.0  # standard deviation of the clean noise (the tiny package normalises by 20 uV)


@dataclass(frozen=True)
class FaultSpec:
    """One fault: what and for how long (it starts when the parent sends SIGUSR1)."""

    kind: str = "none"
    duration_s: float = 0.0
    ppm: float = 0.0  # clock drift: the outlet's samples run this many parts per million fast (+) or slow (-)
    jitter_ms: float = 0.0  # each push is late by a uniform 0..jitter_ms and stamped when it happens

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ConfigError(f"Unknown fault kind {self.kind!r}; choose from {list(FAULT_KINDS)}.")
        if self.duration_s < 0 or self.jitter_ms < 0 or abs(self.ppm) >= 1e5:
            raise ConfigError(f"Fault times and jitter must be non-negative and |ppm| < 1e5, got {self}.")


def _bad_block(kind: str, block: np.ndarray) -> np.ndarray:
    if kind == "nan":
        return np.full_like(block, np.nan)
    if kind == "inf":
        signs = np.where(np.arange(block.shape[0]) % 2 == 0, np.inf, -np.inf).astype(np.float32)
        return np.broadcast_to(signs[:, None], block.shape).copy()
    if kind == "huge":
        return np.full_like(block, HUGE_UV)
    if kind == "zero":
        return np.zeros_like(block)
    if kind == "saturated":
        return np.clip(block * 1000.0, -RAIL_UV, RAIL_UV)
    return block


def run_fault_outlet(*, name: str, source_id: str, n_channels: int, fs_hz: float, chunk_ms: float,
                     ready_file: Path, fault: FaultSpec, seed: int = 0) -> None:
    """Push noise until SIGTERM; SIGUSR1 starts `fault` at the next chunk, and its planned LSL start
    and end times are written next to the ready file (`fault_file`) at that moment."""
    from rohde.server.lsl_inlet import import_pylsl

    pylsl = import_pylsl(LSL_CONFIG)
    chunk = max(1, int(round(chunk_ms * fs_hz / 1000.0)))
    rate = fs_hz * (1.0 + fault.ppm * 1e-6)  # samples per second of the local clock
    rng = np.random.default_rng(seed)
    n_loop = chunk * max(1, int(fs_hz // chunk))
    noise = (rng.standard_normal((n_loop, n_channels)) * NOISE_UV).astype(np.float32)
    info = pylsl.StreamInfo(name, "EMG", n_channels, fs_hz, pylsl.cf_float32, source_id)
    channels = info.desc().append_child("channels")
    for c in range(n_channels):
        ch = channels.append_child("channel")
        ch.append_child_value("label", f"EMG{c + 1}")
        ch.append_child_value("unit", "microvolts")
        ch.append_child_value("type", "EMG")
    outlet = pylsl.StreamOutlet(info, chunk)
    stop, trigger = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: trigger.set())
    t0 = pylsl.local_clock() + 0.05
    _write_json(ready_file, {"t0": t0, "rate_hz": rate, "chunk_samples": chunk, "source_id": source_id,
                             "fault": asdict(fault)})
    start_i = end_i = -1  # the fault's samples [start_i, end_i), once triggered
    i = 0  # next sample index
    while not stop.is_set():
        if trigger.is_set() and start_i < 0:
            start_i = i
            end_i = i + chunk * max(1, int(round(fault.duration_s * rate / chunk)))
            _write_json(fault_file(ready_file), {"fault_start_lsl": t0 + start_i / rate,
                                                 "fault_end_lsl": t0 + end_i / rate})
        n = chunk
        if fault.kind == "burst" and i == start_i:
            n = end_i - start_i  # held back for the burst's length, then sent at once
            due = t0 + end_i / rate
        else:
            due = t0 + (i + n) / rate
        if fault.jitter_ms > 0:
            due += rng.uniform(0.0, fault.jitter_ms / 1000.0)
        delay = due - pylsl.local_clock()
        if delay > 0:
            stop.wait(delay)
            if stop.is_set():
                break
        if fault.kind in ("gap", "stall") and start_i <= i < end_i:
            i = end_i  # these samples are never sent: the next stamps jump over the silence
            continue
        block = noise[np.arange(i, i + n) % n_loop]
        if fault.kind in SIGNAL_FAULTS and start_i <= i < end_i:
            block = _bad_block(fault.kind, block)  # faults start and end on chunk boundaries
        stamp = pylsl.local_clock() if fault.jitter_ms > 0 else t0 + (i + n - 1) / rate
        outlet.push_chunk(block, stamp, True)
        i += n
    time.sleep(0.2)  # let liblsl send the last chunk


def fault_file(ready_file: Path) -> Path:
    return ready_file.with_suffix(".fault.json")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")  # renamed into place: the parent never reads half a file
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def start_fault_outlet(*, name: str, source_id: str, n_channels: int, fs_hz: float, workdir: Path,
                       fault: FaultSpec | None = None, chunk_ms: float = 10.0, seed: int = 0,
                       ) -> tuple[Child, dict[str, Any]]:
    """Start the outlet child; returns it with its ready file (t0, rate_hz, chunk_samples, ...)."""
    fault = fault or FaultSpec()
    ready = workdir / f"{source_id}-{time.monotonic_ns()}.ready.json"
    cmd = [sys.executable, "-m", "rohde.reliability", "outlet", "--name", name, "--source-id", source_id,
           "--n-channels", str(n_channels), "--fs-hz", str(fs_hz), "--chunk-ms", str(chunk_ms),
           "--ready-file", str(ready), "--seed", str(seed), "--fault", json.dumps(asdict(fault))]
    child = start_child(cmd, log=ready.with_suffix(".log"))
    try:
        info = json.loads(child.wait_for_file(ready, timeout_s=30.0))
    except Exception:
        child.stop()
        raise
    info["ready_file"] = str(ready)
    return child, info


def trigger_fault(child: Child, info: dict[str, Any], *, timeout_s: float = 5.0) -> dict[str, float]:
    """Start the outlet's fault now; returns its LSL start and end times (`fault_start_lsl`, `fault_end_lsl`)."""
    child.process.send_signal(signal.SIGUSR1)
    return dict(json.loads(child.wait_for_file(fault_file(Path(info["ready_file"])), timeout_s=timeout_s)))
