"""`rohde demo --personal`: a personal model from calibration to live decisions, with real parts only.

1. `rohde serve` runs with the shipped model on a models folder of its own (a copy of the shipped
   packages) and an admin token, serving streams of type `ExG`.
2. `rohde simulate --follow-cues` is the user's amplifier: a subject the shipped model never saw
   (subject 7; the default training set holds subjects 1-3), typed `ExG`, with two auxiliary channels
   (counter, trigger) that the recorder and the server drop. Its truth markers score the shipped model
   live meanwhile.
3. `rohde record` guides the calibration protocol; the server forwards its cues on /ws (counted).
4. `rohde train --quick` makes the personal package in that models folder.
5. `PUT /models/active` switches the running server to it.
6. A fresh session of the same subject (another electrode donning, `rohde simulate` cycling gestures)
   is scored against its truth markers for `score_s` seconds.

Every stage is timed; the summary gives both accuracies and the timings. Stages run as child processes
(`rohde.server.processes`), so training runs in its own process and this module never imports torch.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rohde.core.errors import RohdeError
from rohde.server.demo import Score, TruthTracker
from rohde.server.lsl_inlet import import_pylsl
from rohde.server.processes import Child, ChildGroup, unique_id, wait_for_port
from rohde.server.settings import default_lsl_config, default_models_dir

SHIPPED_MODEL = "rohde-default"
UNSEEN_SUBJECT = 7  # the shipped model is trained on subjects 1-3 (rohde data simulate --preset default)
TARGET_ACCURACY = 0.95


@dataclass(frozen=True)
class PersonalDemoOptions:
    subject: int = UNSEEN_SUBJECT
    seed: int = 0
    name: str = "personal-demo"  # the personal package's name (and folder)
    record_args: tuple[str, ...] = ()  # extra `rohde record` flags (e.g. a shorter protocol)
    train_args: tuple[str, ...] = ("--quick",)  # extra `rohde train` flags
    score_s: float = 30.0  # seconds of the fresh session scored
    extra_channels: int = 2  # auxiliary channels the simulated amplifier appends
    work_dir: Path | None = None  # None: a temporary folder, removed at the end
    quiet: bool = False


@dataclass
class PersonalDemoResult:
    timings_s: dict[str, float] = field(default_factory=dict)
    shipped: Score = field(default_factory=Score)  # the shipped model on the calibration session
    personal: Score = field(default_factory=Score)  # the personal model on the fresh session
    cue_messages: int = 0  # cues the server forwarded on /ws during the recording
    recording: str = ""
    package: str = ""

    @property
    def total_s(self) -> float:
        return sum(self.timings_s.values())


def _say(options: PersonalDemoOptions, text: str) -> None:
    if not options.quiet:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def _http(method: str, url: str, *, token: str | None = None, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=30.0) as response:
        return json.loads(response.read())


def _wait_for_stream(base: str, stream_id: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(s["stream_id"] == stream_id for s in _http("GET", f"{base}/streams")["streams"]):
            return
        time.sleep(0.2)
    raise RohdeError(f"The server did not find the stream {stream_id!r} within {timeout_s:g} s.")


def _truth(name: str) -> TruthTracker:
    pylsl = import_pylsl(default_lsl_config())
    found = pylsl.resolve_byprop("name", f"{name}-truth", 1, 20.0)
    if not found:
        raise RohdeError(f"The simulator's truth markers ({name}-truth) did not appear within 20 s.")
    inlet = pylsl.StreamInlet(found[0], processing_flags=pylsl.proc_clocksync)
    inlet.open_stream(timeout=5.0)
    return TruthTracker(inlet)


def _score(message: dict[str, Any], truth: TruthTracker, score: Score) -> None:
    known = truth.at(message["lsl_time"])
    if known is None or known[0] not in message["labels"]:
        return  # before the first marker, or a transition (`pause`)
    score.decisions += 1
    score.window_correct += message["window_gesture"] == known[0]
    if not message["rejected"]:
        score.accepted += 1
        score.correct += message["gesture"] == known[0]


def _listen(port: int, stream: str, truth: TruthTracker, score: Score, *, until: Any,
            result: PersonalDemoResult | None = None) -> None:
    """Score the predictions of `stream` (and count cue messages into `result`) until `until()` is true."""
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=20) as ws:
        while not until():
            try:
                message = json.loads(ws.recv(timeout=0.5))
            except TimeoutError:
                continue
            truth.update()
            if message["kind"] == "cue" and result is not None:
                result.cue_messages += 1
            elif message["kind"] == "prediction" and message["stream_id"] == stream:
                _score(message, truth, score)


def _finished(child: Child) -> bool:
    return child.process.poll() is not None


def run_personal_demo(options: PersonalDemoOptions) -> PersonalDemoResult:
    owned = options.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="rohde-personal-")) if options.work_dir is None else options.work_dir
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _run(options, work)
    finally:
        if owned:
            shutil.rmtree(work, ignore_errors=True)


def _run(options: PersonalDemoOptions, work: Path) -> PersonalDemoResult:
    result = PersonalDemoResult()
    cli = [sys.executable, "-m", "rohde.cli"]
    models = work / "models"
    models.mkdir(exist_ok=True)
    if not (models / SHIPPED_MODEL).is_dir():
        shutil.copytree(default_models_dir() / SHIPPED_MODEL, models / SHIPPED_MODEL)
    token = secrets.token_hex(16)
    cues = unique_id("RoHDE-Cues")
    calibration, fresh = unique_id("MyAmp-calibration"), unique_id("MyAmp-fresh")
    amplifier = ["--subject", str(options.subject), "--seed", str(options.seed), "--type", "ExG", "--schedule",
                 "clean", *(["--extra-channels", str(options.extra_channels)] if options.extra_channels else [])]
    clock = time.monotonic()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.monotonic()
        result.timings_s[stage] = round(now - clock, 1)
        clock = now

    with ChildGroup() as children:
        server = children.start(
            [*cli, "serve", "--port", "0", "--port-file", str(work / "port"), "--models-dir", str(models),
             "--model", SHIPPED_MODEL, "--stream-type", "ExG", "--no-marker-outlet"],
            log=work / "server.log", extra_env={"ROHDE_ADMIN_TOKEN": token, "ROHDE_CUE_STREAM_NAME": cues})
        simulator = children.start([*cli, "simulate", "--name", calibration, "--source-id", calibration,
                                    "--session", "1", "--follow-cues", cues, *amplifier], log=work / "calibration.log")
        port = wait_for_port(work / "port", [server, simulator], timeout_s=60.0)
        base = f"http://127.0.0.1:{port}"
        _wait_for_stream(base, calibration)
        truth = _truth(calibration)
        _say(options, f"Server {base} with {SHIPPED_MODEL}; simulated amplifier {calibration} (subject "
                      f"{options.subject}, type ExG, {options.extra_channels} auxiliary channels).")
        lap("start")

        out = work / "calibration.rohde.npz"
        recorder = children.start([*cli, "record", "--stream-name", calibration, "--stream-type", "ExG",
                                   "--cue-stream-name", cues, "--out", str(out), "--subject", f"sim{options.subject}",
                                   *options.record_args], log=work / "record.log")
        _say(options, "Recording the calibration (rohde record; the simulated person follows the cues) ...")
        _listen(port, calibration, truth, result.shipped, until=lambda: _finished(recorder), result=result)
        if recorder.process.returncode != 0:
            raise RohdeError(f"rohde record failed (code {recorder.process.returncode}):\n{recorder.log_tail()}")
        result.recording = str(out)
        simulator.stop()
        lap("record")

        _say(options, "Training the personal model (rohde train) ...")
        package = models / options.name
        trainer = children.start([*cli, "train", "--data", str(out), "--out", str(package), "--name", options.name,
                                  "--work-dir", str(work / "work"), "--no-progress", *options.train_args],
                                 log=work / "train.log")
        if trainer.process.wait() != 0:
            raise RohdeError(f"rohde train failed (code {trainer.process.returncode}):\n{trainer.log_tail()}")
        result.package = str(package)
        lap("train")

        active = _http("PUT", f"{base}/models/active", token=token, body={"name": options.name})
        if active["name"] != options.name:
            raise RohdeError(f"The server reports {active['name']!r} active after switching to {options.name!r}.")
        children.start([*cli, "simulate", "--name", fresh, "--source-id", fresh, "--session", "2", *amplifier],
                       log=work / "fresh.log")
        _wait_for_stream(base, fresh)
        truth = _truth(fresh)
        lap("switch")

        _say(options, f"Scoring {options.name} on a fresh session of subject {options.subject} "
                      f"({options.score_s:g} s) ...")
        deadline = time.monotonic() + options.score_s
        _listen(port, fresh, truth, result.personal, until=lambda: time.monotonic() >= deadline)
        lap("score")
    return result


def summary_lines(result: PersonalDemoResult) -> list[str]:
    def line(label: str, score: Score) -> str:
        if not score.decisions:
            return f"  {label}: no scored decisions"
        rejected = 1 - score.accepted / score.decisions
        window = score.window_correct / score.decisions
        return (f"  {label}: accuracy {score.accuracy * 100:5.1f}% of {score.accepted} accepted decisions "
                f"(rejected {rejected * 100:4.1f}%), window accuracy {window * 100:5.1f}%")

    stages = ", ".join(f"{k} {v:g} s" for k, v in result.timings_s.items())
    return [
        "Summary",
        line("shipped model, calibration session (unseen subject)", result.shipped),
        line("personal model, fresh session", result.personal),
        f"  cue messages the server forwarded on /ws: {result.cue_messages}",
        f"  time: {result.total_s:.0f} s in all ({stages})",
    ]


def main_personal(options: PersonalDemoOptions) -> int:
    """`rohde demo --personal`: run, print the summary; non-zero when the personal model misses the target."""
    result = run_personal_demo(options)
    for text in summary_lines(result):
        sys.stdout.write(text + "\n")
    ok = result.personal.accepted > 0 and result.personal.accuracy >= TARGET_ACCURACY
    sys.stdout.write(f"  target {TARGET_ACCURACY * 100:.0f}%: {'met' if ok else 'NOT met'}\n")
    return 0 if ok else 1
