"""`python -m rohde.bench`: `bench` (the same as `rohde bench`), `gpu` (every GPU check, bench/gpu_check.sh),
`stream-cost` (the server's CPU per stream-second by stage, in-process) and the internal roles `outlet` and
`ingest`, which the benchmark starts as child processes."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from rohde.bench.commands import register, run_bench_command
from rohde.bench.config import INGEST_KINDS, REPO_ROOT
from rohde.bench.gpu_check import PARITY_TOLERANCE
from rohde.core.errors import RohdeError
from rohde.core.prompt_exit import exit_now

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rohde.bench")
    sub = parser.add_subparsers(dest="role", required=True)
    register(sub)
    o = sub.add_parser("outlet", help="noise outlets that log their push times (a child of the benchmark)")
    o.add_argument("--name", required=True)
    o.add_argument("--source-ids", required=True)
    o.add_argument("--n-channels", type=int, required=True)
    o.add_argument("--fs-hz", type=float, required=True)
    o.add_argument("--chunk-ms", type=float, required=True)
    o.add_argument("--ready-file", required=True)
    o.add_argument("--log-file", required=True)
    o.add_argument("--seed", type=int, default=0)
    i = sub.add_parser("ingest", help="one ingestion reader measuring its CPU (a child of the benchmark)")
    i.add_argument("--kind", choices=INGEST_KINDS, required=True)
    i.add_argument("--name", required=True)
    i.add_argument("--source-id", required=True)
    i.add_argument("--seconds", type=float, required=True)
    i.add_argument("--warmup-s", type=float, default=3.0)
    i.add_argument("--model", required=True)
    i.add_argument("--result-file", required=True)
    i.add_argument("--pull-interval-ms", type=float)
    i.add_argument("--quality-interval-s", type=float)
    g = sub.add_parser("gpu", help="every GPU check and figure in one run (bench/gpu_check.sh); fails without CUDA")
    g.add_argument("--out", default=str(REPO_ROOT / "bench"), help="folder for gpu_results.json/.md and results.json")
    g.add_argument("--model", help="model package folder (default: the shipped rohde-default)")
    g.add_argument("--windows", type=int, default=512, help="windows compared for CPU/GPU parity (default 512)")
    g.add_argument("--tolerance", type=float, default=PARITY_TOLERANCE,
                   help=f"largest |p_gpu - p_cpu| allowed (default {PARITY_TOLERANCE:g})")
    g.add_argument("--step-s", type=float, default=15.0, help="seconds per stream count in the latency section")
    g.add_argument("--no-bench", action="store_true", help="skip the benchmark's inference and latency sections")
    g.add_argument("--no-train", action="store_true", help="skip training configs/tiny.json on CUDA")
    c = sub.add_parser("stream-cost", help="the server's CPU per stream-second by stage, in-process (no LSL)")
    c.add_argument("--model", help="model package folder (default: the shipped rohde-default)")
    c.add_argument("--streams", type=int, default=4, help="streams pushed hop by hop (default 4)")
    c.add_argument("--seconds", type=float, default=5.0, help="seconds of stream per repeat (default 5)")
    c.add_argument("--repeats", type=int, default=5, help="repeats; the median is reported (default 5)")
    c.add_argument("--batch", type=int, help="windows per inference run (default: all of one hop; 1: out of step)")
    c.add_argument("--quality-interval-s", type=float, help="the quality monitor's interval (default: server's)")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.role == "bench":
        try:
            return run_bench_command(args)
        except RohdeError as exc:
            logger.error("%s", exc)
            return 2
    if args.role == "gpu":
        from rohde.bench.gpu_check import GpuCheckConfig, run_gpu_check

        try:
            run_gpu_check(GpuCheckConfig(out_dir=Path(args.out), model=Path(args.model) if args.model else None,
                                         n_windows=args.windows, tolerance=args.tolerance, bench=not args.no_bench,
                                         bench_step_s=args.step_s, train=not args.no_train,
                                         command=" ".join(["python -m rohde.bench", *sys.argv[1:]])))
        except RohdeError as exc:
            logger.error("%s", exc)
            return 1
        logger.info("All GPU checks passed; wrote %s/gpu_results.json and gpu_results.md.", args.out)
        return 0
    if args.role == "stream-cost":
        import json

        from rohde.bench.stream_cost import format_cost, stream_cost

        model = Path(args.model) if args.model else REPO_ROOT / "models" / "rohde-default"
        try:
            result = stream_cost(model.resolve(), n_streams=args.streams, seconds=args.seconds, repeats=args.repeats,
                                 batch=args.batch, quality_interval_s=args.quality_interval_s)
        except RohdeError as exc:
            logger.error("%s", exc)
            return 2
        print(json.dumps(result, indent=1) if args.json else format_cost(result))  # noqa: T201 (the command's output)
        return 0
    if args.role == "outlet":
        from rohde.bench.outlets import run_outlets

        run_outlets(name=args.name, source_ids=args.source_ids.split(","), n_channels=args.n_channels,
                    fs_hz=args.fs_hz, chunk_ms=args.chunk_ms, ready_file=Path(args.ready_file),
                    log_file=Path(args.log_file), seed=args.seed)
        if argv is None:  # the benchmark's child, stopped by SIGTERM: its outlets are closed, so end at once
            exit_now(0)
    else:
        from rohde.bench.ingestion import run_ingest_consumer

        run_ingest_consumer(kind=args.kind, name=args.name, source_id=args.source_id, seconds=args.seconds,
                            warmup_s=args.warmup_s, model=Path(args.model), result_file=Path(args.result_file),
                            pull_interval_ms=args.pull_interval_ms, quality_interval_s=args.quality_interval_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
