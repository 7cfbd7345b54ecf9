"""The project's own streaming commands sent SIGTERM while they stream: `rohde simulate` (three tries,
it once ignored SIGTERM one time in three), `rohde replay FILE`, the bench's outlet role and
`rohde demo` (whose simulator and server children must be gone too). Each: exit time and outlet gone."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rohde.core.errors import RohdeError
from rohde.reliability.outcome import Outcome
from rohde.reliability.rig import CaseContext, stream_name
from rohde.server.processes import Child, start_child, unique_id

SIMULATE_TRIES = 3
DEMO_DURATION_S = 60.0  # asked of the demo; SIGTERM comes long before
ADVERTISE_S = 60.0  # a command's outlet must appear within (the demo starts a server first)
LINGER_S = 2.0  # an outlet still resolvable this long after exit counts as lingering


@dataclass
class Tried:
    """One command sent SIGTERM: seconds to exit (None: not within 10 s), outlet lingering, children left."""

    label: str
    exit_s: float | None
    lingering: bool
    children_seen: int = 0  # children running when SIGTERM was sent
    children_left: int = 0


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    """Running or stopped, not a zombie and not gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _arg(pid: int, flag: str) -> str | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else None


def _demo_source_id(child: Child) -> str:
    """The demo names its simulated stream itself: read the simulator child's --source-id."""
    deadline = time.monotonic() + ADVERTISE_S
    while time.monotonic() < deadline and child.process.poll() is None:
        for pid in _children(child.process.pid):
            if (sid := _arg(pid, "--source-id")) is not None:
                return sid
        time.sleep(0.1)
    raise RohdeError(f"`rohde demo` started no simulator within {ADVERTISE_S:g} s; log: {child.log_tail()}")


def _write_recording(path: Path) -> Path:
    """Ten seconds of 16-channel noise at 1 kHz in the project's recording format."""
    from rohde.core.layouts import grid_layout
    from rohde.core.recording import Recording

    n, fs_hz = 10_000, 1000.0
    samples = np.random.default_rng(0).normal(0.0, 20.0, (n, 16))  # (n_samples, n_channels) uV
    rec = Recording(samples=samples, fs_hz=fs_hz, layout=grid_layout(1, 4, 4, name="4x4"),
                    labels=np.zeros(n, dtype=np.int16), gesture_names=("rest",),
                    provenance={"source": "rohde reliability: cli_sigterm noise"})
    return rec.save(path)


def _try(ctx: CaseContext, pylsl: Any, label: str, cmd: list[str], source_id: str | None,
         find_source: Callable[[Child], str] | None = None, ready: Callable[[Child], bool] | None = None) -> Tried:
    with start_child(cmd, log=ctx.workdir / f"{label.replace(' ', '-')}.log") as child:
        sid = source_id if source_id is not None else find_source(child) if find_source else None
        if sid is None or not pylsl.resolve_byprop("source_id", sid, 1, ADVERTISE_S):
            raise RohdeError(f"{label} did not advertise its outlet within {ADVERTISE_S:g} s; log: {child.log_tail()}")
        deadline = time.monotonic() + ADVERTISE_S
        while ready is not None and not ready(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(ctx.durations.settle_s)
        kids = _children(child.process.pid)
        sent = time.monotonic()
        child.process.terminate()
        try:
            child.process.wait(timeout=10.0)
            exit_s: float | None = time.monotonic() - sent
        except subprocess.TimeoutExpired:
            exit_s = None
        left = sum(_alive(pid) for pid in kids)
    return Tried(label, exit_s, bool(pylsl.resolve_byprop("source_id", sid, 1, LINGER_S)), len(kids), left)


def cli_sigterm(ctx: CaseContext, out: Outcome) -> None:
    """Each command started, seen on LSL, sent SIGTERM: it exits in time and its outlet is gone."""
    from rohde.bench.config import LSL_CONFIG
    from rohde.server.lsl_inlet import import_pylsl

    pylsl = import_pylsl(LSL_CONFIG)
    cli = [sys.executable, "-m", "rohde.cli"]
    tried: list[Tried] = []
    for i in range(SIMULATE_TRIES):
        sid = unique_id("rel-sim")
        tried.append(_try(ctx, pylsl, f"simulate {i + 1}", [*cli, "simulate", "--name", stream_name(),
                                                             "--source-id", sid, "--no-markers"], sid))
    recording = _write_recording(ctx.workdir / "noise")
    sid = unique_id("rel-replay")
    tried.append(_try(ctx, pylsl, "replay", [*cli, "replay", str(recording), "--name", stream_name(),
                                             "--source-id", sid, "--no-markers"], sid))
    sid = unique_id("rel-bench")
    tried.append(_try(ctx, pylsl, "bench outlet", [
        sys.executable, "-m", "rohde.bench", "outlet", "--name", stream_name(), "--source-ids", sid,
        "--n-channels", "16", "--fs-hz", "1000", "--chunk-ms", "10", "--ready-file", str(ctx.workdir / "ready.json"),
        "--log-file", str(ctx.workdir / "pushes.npz")], sid))
    tried.append(_try(ctx, pylsl, "demo", [*cli, "demo", "--duration", f"{DEMO_DURATION_S:g}", "--quiet"], None,
                      find_source=_demo_source_id, ready=lambda c: "RoHDE demo:" in c.log_tail()))
    shown = "; ".join(f"{t.label} {'never' if t.exit_s is None else f'{t.exit_s:.2f} s'}" for t in tried)
    late = [t.label for t in tried if t.exit_s is None or t.exit_s > ctx.limits.exit_s]
    out.check("exits in time", not late,
              f"SIGTERM -> exit: {shown} (limit {ctx.limits.exit_s:g} s){f'; late: {late}' if late else ''}")
    lingering = [t.label for t in tried if t.lingering]
    out.check("outlet gone", not lingering, f"{len(lingering)} of {len(tried)} outlets still advertised "
              f"{LINGER_S:g} s after exit{f': {lingering}' if lingering else ''}")
    demo = tried[-1]
    out.check("demo children gone", demo.children_seen == 2 and demo.children_left == 0,
              f"{demo.children_left} of the demo's {demo.children_seen} children (simulator and server expected) "
              "alive after it exited")
