"""`rohde serve`, `rohde simulate`, `rohde replay`, `rohde demo`; heavy imports inside the handlers."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from rohde.server.record_command import register_record

logger = logging.getLogger(__name__)

CHANNELS_HELP = ("which channels of the stream feed the model, in model order: 0-based indices, ranges (0-63), "
                 "labels, label ranges (EMG1..EMG64), type:NAME (default: from the stream's desc, counter/trigger "
                 "channels dropped)")
CHANNEL_FORMAT_CHOICES = {"float32": "float32", "double": "double64", "int32": "int32", "int16": "int16"}


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    serve = subparsers.add_parser("serve", help="run the real-time gesture server (LSL in, WebSocket/REST out)")
    serve.add_argument("--config", help="JSON or TOML settings file (also ROHDE_CONFIG)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8000; 0 = any free port)")
    serve.add_argument("--models-dir", help="folder of model packages (default: the shipped models)")
    serve.add_argument("--model", help="package to activate at start-up (default rohde-default)")
    serve.add_argument("--stream-name", help="serve LSL streams with this name")
    serve.add_argument("--stream-type", help="serve LSL streams of these types, comma-separated, any case "
                                             "(default EMG,ExG,EEG)")
    serve.add_argument("--stream-source-id",
                       help="serve the LSL stream with this source_id, or those with any of several (comma-separated)")
    serve.add_argument("--channels", help=CHANNELS_HELP)
    serve.add_argument("--max-streams", type=int, help="streams served at once (default 4)")
    serve.add_argument("--vote-k", type=int, help="majority vote over the last k windows (default 5)")
    serve.add_argument("--confidence-threshold", type=float, help="reject decisions below (default 0.5)")
    serve.add_argument("--ws-queue-size", type=int, help="messages held per WebSocket client (default 256)")
    serve.add_argument("--inference-queue-size", type=int,
                       help="windows waiting for inference before the oldest are shed (default 256)")
    serve.add_argument("--no-marker-outlet", action="store_true", help="do not publish decisions on LSL")
    serve.add_argument("--port-file", help="write the bound port to this file once listening")
    serve.add_argument("--no-alignment", action="store_true",
                       help="no label-free alignment of the streams to the model's training grid (ROHDE_ALIGNMENT)")
    serve.add_argument("--alignment-warmup-s", type=float,
                       help="seconds of each stream collected before its alignment is estimated (default 30)")
    serve.add_argument("--require-gpu", action="store_true", default=None,
                       help="refuse to start unless the model's ONNX Runtime session really runs on CUDA")
    # Tokens come from ROHDE_ADMIN_TOKEN / ROHDE_READ_TOKEN or the config file, never from flags, which any
    # local user can read in the process list.
    serve.add_argument("--allowed-origin", action="append", dest="allowed_origins", metavar="ORIGIN",
                       help="a web page origin (scheme://host[:port], or *) whose pages may open /ws; repeat for "
                            "more (default: pages from loopback hosts; clients without an Origin always pass)")
    serve.add_argument("--max-request-bytes", type=int,
                       help="refuse request bodies larger than this with 413 (default 65536)")
    serve.set_defaults(handler=_serve, prompt_exit=True)

    for name, help_text in (("simulate", "LSL outlet playing the embedded simulator in real time"),
                            ("replay", "LSL outlet replaying a recording (.rohde.npz, .xdf, flexemg .mat)")):
        p = subparsers.add_parser(name, help=help_text)
        if name == "replay":
            p.add_argument("file", help="recording to play (looped unless --once)")
            p.add_argument("--once", action="store_true", help="stop at the end of the recording")
            p.add_argument("--stream-name", help="XDF: read the EMG stream of this name")
            p.add_argument("--stream-type", help="XDF: read the EMG stream of these types, comma-separated "
                                                 "(default: the one stream of type EMG, else ExG, else EEG)")
            p.add_argument("--stream-source-id", help="XDF: read the EMG stream with this source_id")
            p.add_argument("--channels", help="XDF: " + CHANNELS_HELP)
            p.add_argument("--layout", help="XDF: electrode layout (3x8x8, flexemg16x4, GRIDSxROWSxCOLS; default: "
                                            "the stream's desc, else by channel count)")
        else:
            p.add_argument("--subject", type=int, default=1,
                           help="simulated subject (default 1: a subject of the default training data)")
            p.add_argument("--session", type=int, default=3,
                           help="simulated session (default 3: a day the shipped model never saw)")
            p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
            p.add_argument("--schedule", default="clean,CA,LC",
                           help="conditions in turn (default clean,CA,LC); KIND@SHAPE (e.g. CA@any, LC@patch) places "
                                "the disturbance on random electrodes of that shape and moves it every --move-s")
            p.add_argument("--condition-s", type=float, default=30.0, help="seconds per condition (default 30)")
            p.add_argument("--move-s", type=float, default=5.0,
                           help="seconds before a placed disturbance (KIND@SHAPE) moves to other electrodes "
                                "(default 5)")
            p.add_argument("--follow-cues", nargs="?", const="RoHDE-Cues", default=None, metavar="NAME",
                           help="hold the gesture the latest cue of the cue stream NAME asks for (default "
                                "RoHDE-Cues, as `rohde record` publishes) instead of cycling gestures")
        p.add_argument("--name", default="RoHDE-Sim", help="LSL stream name (default RoHDE-Sim)")
        p.add_argument("--source-id", default=None, help="LSL source_id (default: derived from the name)")
        p.add_argument("--type", default="EMG", help="LSL stream type (default EMG)")
        p.add_argument("--chunk-ms", type=float, default=20.0, help="push every this many ms (default 20)")
        p.add_argument("--extra-channels", type=int, default=0, metavar="N",
                       help="append N counter/trigger-like channels (Counter, Trigger, AUX1...), as amplifiers do")
        p.add_argument("--channel-format", default="float32", choices=sorted(CHANNEL_FORMAT_CHOICES),
                       help="float32 (uV, default), double (V), int32 (nV) or int16 (0.5 uV steps); the desc "
                            "names the unit")
        p.add_argument("--shuffle-channels", type=int, default=None, metavar="SEED",
                       help="publish the channels in a random order (labels and desc layout follow them)")
        p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
        p.add_argument("--no-markers", action="store_true", help="no truth marker stream")
        p.set_defaults(handler=_simulate if name == "simulate" else _replay, prompt_exit=True)

    demo = subparsers.add_parser("demo", help="simulated amplifier + server + live decisions against the truth")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds and summarise")
    demo.add_argument("--models-dir", default=None, help="folder of model packages (default: the shipped models)")
    demo.add_argument("--model", default="rohde-default", help="model package (default rohde-default)")
    demo.add_argument("--condition-s", type=float, default=None,
                      help="seconds per condition (default: --duration shared by the conditions, else 30)")
    demo.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")
    demo.add_argument("--quiet", action="store_true", help="only print the summary")
    demo.add_argument("--personal", action="store_true",
                      help="the personal-model flow instead: simulated amplifier of an unseen subject -> rohde record "
                           "-> rohde train --quick -> live switch -> scored on a fresh session (--duration: seconds "
                           "scored, default 30)")
    demo.add_argument("--work-dir", type=Path, default=None, help="--personal: keep its files (logs, recording, "
                                                                  "models) here instead of a temporary folder")
    demo.set_defaults(handler=_demo, prompt_exit=True)
    register_record(subparsers)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rohde.server.allocator import configure_allocator
    from rohde.server.app import create_app
    from rohde.server.blas_threads import limit_blas_threads
    from rohde.server.inference import choose_providers
    from rohde.server.security import TokenRedactingFilter
    from rohde.server.settings import load_settings

    settings = load_settings(
        args.config, host=args.host, port=args.port, models_dir=args.models_dir, model=args.model,
        stream_name=args.stream_name, stream_type=args.stream_type, stream_source_id=args.stream_source_id,
        stream_channels=args.channels,
        max_streams=args.max_streams, vote_k=args.vote_k, confidence_threshold=args.confidence_threshold,
        ws_queue_size=args.ws_queue_size, inference_queue_size=args.inference_queue_size,
        marker_outlet=False if args.no_marker_outlet else None, allowed_origins=args.allowed_origins,
        max_request_bytes=args.max_request_bytes, require_gpu=args.require_gpu,
        alignment=False if args.no_alignment else None, alignment_warmup_s=args.alignment_warmup_s,
    )
    if settings.require_gpu:
        # A build without CUDA is refused here; the start-up then checks the provider the real session runs on.
        choose_providers(settings.providers, require_gpu=True)
    configure_allocator()  # resident memory flat over long runs (allocator.py)
    limit_blas_threads()  # no spinning BLAS workers beside the stream threads (blas_threads.py)
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, workers=1, log_level="info",
                            lifespan="on", ws=_websocket_protocol(), ws_max_size=WS_MAX_MESSAGE_BYTES,
                            ws_per_message_deflate=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    # After uvicorn.Config, which sets up its loggers: a read token sent as ?token= stays out of the access log.
    logging.getLogger("uvicorn.access").addFilter(TokenRedactingFilter())
    server = _server_class(app)(config)
    if args.port_file:
        _write_port_when_started(server, Path(args.port_file))
    server.run()  # exits with uvicorn's status 3 when start-up fails (e.g. --require-gpu and the session runs on CPU)
    return 0


# Decisions are a few hundred bytes, 20 a second per stream: compressing each costs the server more CPU than the
# bandwidth it saves is worth, so /ws offers no per-message compression.
# Clients never send messages on /ws (it refuses them with 1003); anything this large is refused sooner, by the
# WebSocket layer, with 1009, before it is buffered.
WS_MAX_MESSAGE_BYTES = 64 * 1024
GRACEFUL_SHUTDOWN_S = 2  # a connection that ignores the close frames cannot hold a stop up for longer


def _server_class(app: Any) -> Any:
    """uvicorn's Server, telling the WebSocket clients (`server_stopping`, then close 1001) before it
    closes their connections on SIGTERM/SIGINT; uvicorn itself would drop them with 1012 and no message."""
    import uvicorn

    from rohde.server.app import announce_shutdown

    class RohdeServer(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            try:
                await announce_shutdown(app)
            except Exception:  # telling the clients must never keep the server from stopping
                logger.exception("Telling the WebSocket clients about the shutdown failed.")
            await super().shutdown(sockets=sockets)

    return RohdeServer


def _websocket_protocol() -> Any:
    """uvicorn's websockets-sansio protocol, answering the handshakes websockets itself refuses.

    websockets rejects an upgrade request whose request line is over 8 KB (414) or whose header lines are
    too long or too many (431) and queues that response, but uvicorn only writes responses for requests
    that parsed: the client got nothing until its own timeout. This writes the response and closes.
    """
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    class AnsweringWebSocketProtocol(WebSocketsSansIOProtocol):
        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if (not self.handshake_initiated and self.conn.handshake_exc is not None
                    and not self.transport.is_closing()):
                self.transport.write(b"".join(self.conn.data_to_send()))
                self.transport.close()

    return AnsweringWebSocketProtocol


def _write_port_when_started(server: Any, port_file: Path) -> None:
    """Write the really bound port (useful with --port 0) once uvicorn listens."""

    def wait() -> None:
        while not server.started:
            if server.should_exit:
                return
            threading.Event().wait(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(port_file)

    threading.Thread(target=wait, name="rohde-port-file", daemon=True).start()


def _play(amplifier: Any, duration: float | None) -> int:
    """Run `amplifier` in this (main) thread until SIGTERM, SIGINT, `duration` or the source's end, then
    close its outlets before returning, so inlets see the stream end at once."""
    # The handler only sets a flag (no lock: see LslAmplifier.stop); the push loop sleeps at most half a
    # chunk, so it returns within a few ms of the signal.
    stop = amplifier.stop
    previous = {sig: signal.signal(sig, lambda *_: stop()) for sig in (signal.SIGTERM, signal.SIGINT)}
    logger.info("Streaming %r (%s) until stopped.", amplifier.name, amplifier.source_id)
    try:
        sent = amplifier.run(duration_s=duration)
    finally:
        amplifier.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    logger.info("Sent %d samples.", sent)
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from rohde.server.amplifier import LslAmplifier, SimulatorSource
    from rohde.server.settings import default_lsl_config

    source = SimulatorSource.create(subject=args.subject, session=args.session, seed=args.seed,
                                    schedule=[s.strip() for s in args.schedule.split(",") if s.strip()],
                                    condition_s=args.condition_s, move_s=args.move_s)
    amplifier = LslAmplifier(source, name=args.name, source_id=args.source_id or f"{args.name}-{args.seed}",
                             stream_type=args.type, chunk_ms=args.chunk_ms, markers=not args.no_markers,
                             lsl_config=default_lsl_config(), **_outlet_options(args))
    if not args.follow_cues:
        return _play(amplifier, args.duration)
    from rohde.server.cue_listener import CueListener, SimulatedPerformer

    simulator = source.simulator

    def perform(gesture: str, lsl_time: float) -> None:
        # At the cue's own sample: a push loop running late still shows the reaction at the right time.
        simulator.set_gesture(gesture, at_sample=amplifier.sample_at(lsl_time))

    performer = SimulatedPerformer(perform, simulator.gesture_names,
                                   simulator.config.gestures[simulator.config.rest_index])
    follower = CueListener(performer, name=args.follow_cues, lsl_config=default_lsl_config())
    follower.start()
    try:
        return _play(amplifier, args.duration)
    finally:
        follower.stop()


def _replay(args: argparse.Namespace) -> int:
    from rohde.core.datasets import load_any
    from rohde.server.amplifier import LslAmplifier, RecordingSource
    from rohde.server.settings import default_lsl_config

    selectors = {"stream_name": args.stream_name, "stream_source_id": args.stream_source_id,
                 "channels": args.channels, "layout": args.layout,
                 "stream_type": [t for t in (args.stream_type or "").split(",") if t.strip()] or None}
    recording = load_any(args.file, **{key: value for key, value in selectors.items() if value})
    amplifier = LslAmplifier(RecordingSource(recording, loop=not args.once), name=args.name,
                             source_id=args.source_id or f"{args.name}-replay", stream_type=args.type,
                             chunk_ms=args.chunk_ms, markers=not args.no_markers, lsl_config=default_lsl_config(),
                             **_outlet_options(args))
    return _play(amplifier, args.duration)


def _outlet_options(args: argparse.Namespace) -> dict[str, Any]:
    """How `rohde simulate` / `rohde replay` act like another amplifier (see `rohde.server.amplifier`)."""
    return {"extra_channels": args.extra_channels, "channel_format": CHANNEL_FORMAT_CHOICES[args.channel_format],
            "shuffle_seed": args.shuffle_channels}


def _demo(args: argparse.Namespace) -> int:
    if args.personal:
        from rohde.server.personal_demo import PersonalDemoOptions, main_personal

        return main_personal(PersonalDemoOptions(seed=args.seed, score_s=args.duration or 30.0,
                                                 work_dir=args.work_dir, quiet=args.quiet))
    from rohde.server.demo import DemoOptions, run_demo

    return run_demo(DemoOptions(duration_s=args.duration, models_dir=args.models_dir, model=args.model,
                                condition_s=args.condition_s, seed=args.seed, quiet=args.quiet))
