"""`rohde record`: argument parsing and the thin handler (`rohde.server.recorder` does the work)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

from rohde.server.cue_protocol import DEFAULT_ACTIVE_GESTURES, CalibrationProtocol


def register_record(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    defaults = CalibrationProtocol()
    p = subparsers.add_parser(
        "record",
        help="record a guided calibration session from your amplifier into a labelled .rohde.npz",
        description="Guide the user through a calibration protocol (each gesture held --repetitions times with "
        "rest between), print the cues, publish them on the LSL marker stream RoHDE-Cues (the server forwards "
        "them to WebSocket clients; LabRecorder can store them) and write the labelled recording. Ctrl-C or "
        f"SIGTERM keep everything recorded so far. The default protocol takes {defaults.duration_s:.0f} s.",
    )
    p.add_argument("--out", type=Path, default=None,
                   help="recording to write (default calibration-SUBJECT-TIME.rohde.npz here)")
    p.add_argument("--stream-name", help="record the LSL stream with this name")
    p.add_argument("--stream-type", default="EMG,ExG,EEG",
                   help="... of one of these comma-separated types, as rohde serve (default EMG,ExG,EEG)")
    p.add_argument("--stream-source-id", help="... with this source_id")
    p.add_argument("--channels", help="which stream channels are EMG, as rohde serve --channels (0-based indices, "
                                      "ranges 0-63, labels, type:NAME); default: auxiliary channels dropped")
    p.add_argument("--layout", help="electrode layout preset when the stream does not describe one "
                                    "(3x8x8, flexemg16x4, GRIDSxROWSxCOLS)")
    p.add_argument("--gestures", default=",".join(DEFAULT_ACTIVE_GESTURES),
                   help="comma-separated gestures to hold; any names (default: the six default gestures)")
    p.add_argument("--rest-label", default=None,
                   help="class name of rest (default no_movement for the default gestures, else rest)")
    p.add_argument("--repetitions", type=int, default=defaults.repetitions,
                   help=f"holds per gesture (default {defaults.repetitions}; training needs 3)")
    p.add_argument("--hold-s", type=float, default=defaults.hold_s,
                   help=f"seconds per hold (default {defaults.hold_s:g})")
    p.add_argument("--rest-s", type=float, default=defaults.rest_s,
                   help=f"seconds of rest after each hold (default {defaults.rest_s:g})")
    p.add_argument("--prepare-s", type=float, default=defaults.prepare_s,
                   help=f"seconds of announcement before each hold (default {defaults.prepare_s:g})")
    p.add_argument("--lead-in-s", type=float, default=defaults.lead_in_s,
                   help=f"seconds of rest before the first cue (default {defaults.lead_in_s:g})")
    p.add_argument("--disturbed-trials", type=int, default=0,
                   help="extra holds while tapping the electrodes (recorded as condition CA; default 0)")
    p.add_argument("--subject", default="me", help="subject name written into the recording (default me)")
    p.add_argument("--session", default=None, help="session name (default: the start time)")
    p.add_argument("--cue-stream-name", default="RoHDE-Cues", help="name of the published cue stream")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the EMG stream (default 10)")
    p.add_argument("--recover", type=Path, default=None, metavar="OUT.rohde.npz.partial",
                   help="only turn the journal a killed recording left into its recording, then exit")
    p.set_defaults(handler=_record)


def _record(args: argparse.Namespace) -> int:
    import time

    from rohde.server.lsl_inlet import StreamQuery
    from rohde.server.recorder import CalibrationRecorder, RecordOptions, finalize_journal
    from rohde.server.settings import default_lsl_config

    if args.recover is not None:
        print(f"Wrote {finalize_journal(args.recover)}")  # noqa: T201 - the command's answer
        return 0
    protocol = CalibrationProtocol(
        gestures=tuple(g.strip() for g in args.gestures.split(",") if g.strip()), repetitions=args.repetitions,
        hold_s=args.hold_s, rest_s=args.rest_s, prepare_s=args.prepare_s, lead_in_s=args.lead_in_s,
        disturbed_trials=args.disturbed_trials, rest_label=args.rest_label)
    out = args.out or Path(f"calibration-{args.subject}-{time.strftime('%Y%m%d-%H%M%S')}.rohde.npz")
    types = tuple(t.strip() for t in args.stream_type.split(",") if t.strip())
    options = RecordOptions(out=out, query=StreamQuery(name=args.stream_name, type=types,
                                                       source_id=args.stream_source_id),
                            protocol=protocol, layout=args.layout, channels=args.channels, subject=args.subject,
                            session=args.session,
                            cue_stream_name=args.cue_stream_name, resolve_timeout_s=args.timeout)
    recorder = CalibrationRecorder(options, lsl_config=default_lsl_config())
    previous = {sig: signal.signal(sig, lambda *_: recorder.stop()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        recorder.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if recorder.lost:
        return 1
    return 130 if recorder.interrupted else 0
