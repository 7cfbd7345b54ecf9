"""`rohde demo`: simulated amplifier + server + a live subscriber scoring decisions against the truth.

Starts `rohde simulate` and `rohde serve` as child processes (both on this process's LSL configuration:
the shipped loopback one unless `LSLAPICFG` names another), subscribes to the server's WebSocket and
to the simulator's truth markers, prints live decisions with a running accuracy per condition
(clean, CA, LC, then CA and LC on random electrodes that move across the grid), and on Ctrl-C or
after `--duration` stops everything and prints a summary: accuracy per condition, decisions per
second, processing latency median and p99. Exits non-zero if no decision arrived.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import tempfile
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rohde.core.errors import ModelPackageError, RohdeError
from rohde.core.model_package import load_model_package
from rohde.server.lsl_inlet import import_pylsl
from rohde.server.processes import ChildGroup, unique_id, wait_for_port
from rohde.server.settings import default_lsl_config, default_models_dir

logger = logging.getLogger(__name__)

# The disturbances the model was trained with, then the same kinds on random electrodes that move every 5 s.
SCHEDULE = ("clean", "CA", "LC", "CA@any", "LC@any")


@dataclass(frozen=True)
class DemoOptions:
    duration_s: float | None = None  # None: until Ctrl-C
    models_dir: str | None = None
    model: str = "rohde-default"
    condition_s: float | None = None  # None: the duration shared by the schedule, else 30 s
    seed: int = 0
    quiet: bool = False


@dataclass
class Score:
    decisions: int = 0  # decisions with a known true gesture
    accepted: int = 0  # of those, not rejected
    correct: int = 0  # accepted and equal to the truth
    window_correct: int = 0  # the window's own top class equals the truth (before vote and rejection)

    @property
    def accuracy(self) -> float:
        return self.correct / self.accepted if self.accepted else float("nan")


@dataclass
class Tally:
    per_condition: dict[str, Score] = field(default_factory=lambda: {c: Score() for c in SCHEDULE})
    latencies_ms: list[float] = field(default_factory=list)
    n_predictions: int = 0
    first_at: float | None = None
    last_at: float | None = None
    statuses: list[str] = field(default_factory=list)


def _write(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class TruthTracker:
    """The simulator's [gesture, condition] markers, looked up by LSL time."""

    def __init__(self, inlet: Any) -> None:
        self._inlet = inlet
        self.stamps: list[float] = []
        self.values: list[tuple[str, str]] = []

    def update(self) -> None:
        markers, stamps = self._inlet.pull_chunk(timeout=0.0)
        for marker, stamp in zip(markers, stamps, strict=True):
            self.stamps.append(float(stamp))
            self.values.append((str(marker[0]), str(marker[1])))

    def at(self, lsl_time: float) -> tuple[str, str] | None:
        i = bisect_right(self.stamps, lsl_time) - 1
        return self.values[i] if i >= 0 else None


class DemoStopped(Exception):
    """Raised in the main thread by SIGTERM, so the children are stopped on the way out."""


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # One-shot: a second SIGTERM while the children are being stopped must not cut that short (the
    # harness stops them within its bounded timeout).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise DemoStopped


def run_demo(options: DemoOptions) -> int:
    models_dir = Path(options.models_dir) if options.models_dir else default_models_dir()
    try:
        package = load_model_package(models_dir / options.model)
    except ModelPackageError as exc:
        raise RohdeError(
            f"The demo needs the model package {options.model!r} in {str(models_dir)!r}: {exc} "
            "Train and export one first (see README), or pass --models-dir/--model."
        ) from exc
    condition_s = options.condition_s or (options.duration_s / len(SCHEDULE) if options.duration_s else 30.0)
    name = unique_id("RoHDE-Demo")
    cli = [sys.executable, "-m", "rohde.cli"]
    tally = Tally()
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        _run(options, models_dir, package, condition_s, name, cli, tally)
    except DemoStopped:
        _write("Stopping (SIGTERM).")
    finally:
        signal.signal(signal.SIGTERM, previous)
    return _summary(tally)


def _run(options: DemoOptions, models_dir: Path, package: Any, condition_s: float, name: str, cli: list[str],
         tally: Tally) -> None:
    """Start the simulator and the server, subscribe until the duration or a stop; both children are
    stopped (SIGTERM, then SIGKILL) on every way out."""
    with tempfile.TemporaryDirectory(prefix="rohde-demo-") as tmp, ChildGroup() as children:
        port_file = Path(tmp) / "port"
        try:
            simulator = children.start(
                [*cli, "simulate", "--name", name, "--source-id", name, "--seed", str(options.seed),
                 "--schedule", ",".join(SCHEDULE), "--condition-s", str(condition_s)],
                log=Path(tmp) / "simulator.log")
            server = children.start(
                [*cli, "serve", "--port", "0", "--port-file", str(port_file), "--models-dir", str(models_dir),
                 "--model", options.model, "--stream-name", name],
                log=Path(tmp) / "server.log")
            port = wait_for_port(port_file, [server, simulator], timeout_s=60.0)
            _write(f"RoHDE demo: model {package.metadata.name} v{package.metadata.version}, stream {name}, "
                   f"server http://127.0.0.1:{port}, {condition_s:g} s per condition ({', '.join(SCHEDULE)}).")
            _subscribe(port, name, options, tally)
        except KeyboardInterrupt:
            _write("Stopping (Ctrl-C).")


def _subscribe(port: int, name: str, options: DemoOptions, tally: Tally) -> None:
    from websockets.sync.client import connect

    pylsl = import_pylsl(default_lsl_config())
    found = pylsl.resolve_byprop("name", f"{name}-truth", 1, 20.0)
    if not found:
        raise RohdeError(f"The simulator's truth markers ({name}-truth) did not appear within 20 s.")
    truth_inlet = pylsl.StreamInlet(found[0], processing_flags=pylsl.proc_clocksync)
    truth_inlet.open_stream(timeout=5.0)
    truth = TruthTracker(truth_inlet)
    _wait_for_stream(port, name, timeout_s=60.0)
    started = time.monotonic()
    next_line = started + 1.0
    with connect(f"ws://127.0.0.1:{port}/ws?stream={name}", open_timeout=20) as ws:
        while options.duration_s is None or time.monotonic() - started < options.duration_s:
            try:
                message = json.loads(ws.recv(timeout=0.5))
            except TimeoutError:
                continue
            truth.update()
            if message["kind"] == "status":
                tally.statuses.append(f"{message['event']}: {message.get('detail', '')}")
                if not options.quiet:
                    _write(f"[status] {message['event']} {message.get('detail', '')}")
                continue
            if message["kind"] != "prediction":  # calibration cues of a `rohde record` nearby
                continue
            _score(message, truth, tally)
            if not options.quiet and time.monotonic() >= next_line:
                next_line += 1.0
                _write(_live_line(message, truth, tally, time.monotonic() - started))


def _wait_for_stream(port: int, stream_id: str, *, timeout_s: float) -> None:
    """Return once the server lists `stream_id` in /streams (it refuses a subscription to an id it has
    never known, and the simulator may still be starting)."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/streams", timeout=5.0) as response:
            streams = json.loads(response.read())["streams"]
        if any(s["stream_id"] == stream_id for s in streams):
            return
        time.sleep(0.2)
    raise RohdeError(f"The server did not find the simulated stream {stream_id!r} within {timeout_s:g} s.")


def _score(message: dict[str, Any], truth: TruthTracker, tally: Tally) -> None:
    now = time.monotonic()
    tally.first_at = tally.first_at or now
    tally.last_at = now
    tally.n_predictions += 1
    tally.latencies_ms.append(float(message["latency_ms"]))
    known = truth.at(message["lsl_time"])
    if known is None or known[0] not in message["labels"] or known[1] not in tally.per_condition:
        return  # before the first marker, or during an unusable transition
    score = tally.per_condition[known[1]]
    score.decisions += 1
    score.window_correct += message["window_gesture"] == known[0]
    if not message["rejected"]:
        score.accepted += 1
        score.correct += message["gesture"] == known[0]


def _live_line(message: dict[str, Any], truth: TruthTracker, tally: Tally, elapsed_s: float) -> str:
    known = truth.at(message["lsl_time"])
    true_gesture, condition = known if known else ("?", "?")
    accs = " ".join(f"{c}={s.accuracy * 100:5.1f}%" if s.accepted else f"{c}=  -  "
                    for c, s in tally.per_condition.items())
    mark = "REJ" if message["rejected"] else ("ok " if message["gesture"] == true_gesture else "-- ")
    return (f"{elapsed_s:6.1f}s [{condition:>6}] truth {true_gesture:<16} decided {message['gesture']:<16} "
            f"{mark} conf {message['confidence']:.2f} bad ch {len(message['bad_channels']):3d} | {accs}")


def _summary(tally: Tally) -> int:
    _write("")
    _write("Summary")
    if tally.n_predictions == 0:
        _write("  No decision arrived: the demo failed.")
        return 1
    span = (tally.last_at or 0) - (tally.first_at or 0)
    rate = (tally.n_predictions - 1) / span if span > 0 else float("nan")
    for condition, score in tally.per_condition.items():
        if score.decisions == 0:
            _write(f"  {condition:>6}: no scored decisions")
            continue
        rejected = 1 - score.accepted / score.decisions
        window_accuracy = score.window_correct / score.decisions
        _write(f"  {condition:>6}: accuracy {score.accuracy * 100:5.1f}% of {score.accepted} accepted decisions "
               f"(rejected {rejected * 100:4.1f}%), window accuracy {window_accuracy * 100:5.1f}%")
    latencies = np.asarray(tally.latencies_ms)
    _write(f"  decisions: {tally.n_predictions} ({rate:.1f} per second)")
    _write(f"  processing latency per window: median {np.median(latencies):.2f} ms, "
           f"p99 {np.percentile(latencies, 99):.2f} ms")
    return 0
