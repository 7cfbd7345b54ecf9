"""Noise outlets in their own processes, each logging when it pushed every chunk.

`run_outlets` is the child's body (`python -m rohde.bench outlet`); `outlet_group` starts enough of
those processes for `n_streams` streams and `stop_outlets` ends them and reads their push logs.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rohde.bench.config import LSL_CONFIG
from rohde.core.errors import RohdeError
from rohde.server.processes import Child, start_child, stop_children, unique_id


def run_outlets(*, name: str, source_ids: Sequence[str], n_channels: int, fs_hz: float, chunk_ms: float,
                ready_file: Path, log_file: Path, seed: int = 0) -> None:
    """Push noise on one outlet per source id in real time until SIGTERM; log every push time.

    Sample i carries the LSL time t0 + i / fs_hz; the chunk holding samples [k*c, (k+1)*c) is pushed
    as soon as its last sample is due, and its push moment (LSL local clock) is recorded per outlet,
    so a decision's latency can be measured from the push of its window's last sample.
    """
    from rohde.server.lsl_inlet import import_pylsl

    pylsl = import_pylsl(LSL_CONFIG)
    chunk = max(1, int(round(chunk_ms * fs_hz / 1000.0)))
    rng = np.random.default_rng(seed)
    n_loop = chunk * max(1, int(fs_hz // chunk))  # about one second of noise, looped
    data = (rng.standard_normal((n_loop, n_channels)) * 20.0).astype(np.float32)
    outlets = []
    for sid in source_ids:
        info = pylsl.StreamInfo(name, "EMG", n_channels, fs_hz, pylsl.cf_float32, sid)
        channels = info.desc().append_child("channels")
        for c in range(n_channels):
            ch = channels.append_child("channel")
            ch.append_child_value("label", f"EMG{c + 1}")
            ch.append_child_value("unit", "microvolts")
            ch.append_child_value("type", "EMG")
        outlets.append(pylsl.StreamOutlet(info, chunk))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    pushes: list[list[float]] = [[] for _ in outlets]
    t0 = pylsl.local_clock() + 0.05
    ready = ready_file.with_suffix(".tmp")  # renamed into place: the parent never reads half a file
    ready.write_text(json.dumps({"t0": t0, "chunk_samples": chunk, "fs_hz": fs_hz, "source_ids": list(source_ids)}))
    ready.replace(ready_file)
    k = 0
    while not stop.is_set():
        due = t0 + (k + 1) * chunk / fs_hz
        delay = due - pylsl.local_clock()
        if delay > 0:
            time.sleep(delay)
        start = (k * chunk) % n_loop
        block = data[start : start + chunk]
        stamp = t0 + ((k + 1) * chunk - 1) / fs_hz  # LSL time of the chunk's last sample
        for j, outlet in enumerate(outlets):
            pushes[j].append(pylsl.local_clock())
            outlet.push_chunk(block, stamp, True)
        k += 1
    time.sleep(0.5)  # keep the outlets open until liblsl has sent the last chunks to every inlet
    np.savez(log_file, push_clock=np.asarray(pushes, dtype=np.float64), t0=t0, chunk_samples=chunk, fs_hz=fs_hz)


@dataclass
class OutletGroup:
    """Outlet processes serving the streams `source_ids`, all named `name`."""

    name: str
    source_ids: list[str]
    children: list[Child] = field(default_factory=list)
    ready: list[dict[str, Any]] = field(default_factory=list)  # per process: t0, chunk_samples, fs_hz, source_ids
    logs: list[Path] = field(default_factory=list)  # per process: its push log (.npz)


@contextmanager
def outlet_group(*, n_streams: int, n_channels: int, fs_hz: float, chunk_ms: float, per_process: int,
                 workdir: Path) -> Iterator[OutletGroup]:
    """`n_streams` noise streams, `per_process` outlets per process; every process stopped at the end."""
    name = unique_id("RoHDE-Bench")
    tag = name.rsplit("-", 1)[1]
    group = OutletGroup(name=name, source_ids=[f"bench-{tag}-{i}" for i in range(n_streams)])
    with tempfile.TemporaryDirectory(dir=workdir) as tmp, ExitStack() as stack:
        for p, first in enumerate(range(0, n_streams, per_process)):
            sids = group.source_ids[first : first + per_process]
            ready, log, out = Path(tmp) / f"ready{p}.json", Path(tmp) / f"push{p}.npz", Path(tmp) / f"outlet{p}.log"
            cmd = [sys.executable, "-m", "rohde.bench", "outlet", "--name", group.name,
                   "--source-ids", ",".join(sids), "--n-channels", str(n_channels), "--fs-hz", str(fs_hz),
                   "--chunk-ms", str(chunk_ms), "--ready-file", str(ready), "--log-file", str(log), "--seed", str(p)]
            child = stack.enter_context(start_child(cmd, log=out))
            group.children.append(child)
            group.logs.append(log)
            group.ready.append(json.loads(child.wait_for_file(ready, timeout_s=30.0)))
        yield group


def stop_outlets(group: OutletGroup) -> list[np.ndarray]:
    """Stop the outlet processes and read their push logs: one `(n_outlets, n_chunks)` array each."""
    stop_children(group.children, timeout_s=20.0)
    missing = [child.log for child, log in zip(group.children, group.logs, strict=True) if not log.exists()]
    if missing:
        raise RohdeError(f"Outlet processes ended without writing their push logs; see {missing}.")
    return [np.load(log)["push_clock"] for log in group.logs]
