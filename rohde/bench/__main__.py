"""`python -m rohde.bench`: `bench` (the same as `rohde bench`) and the internal roles `outlet` and
`ingest`, which the benchmark starts as child processes."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from rohde.bench.commands import register, run_bench_command
from rohde.bench.config import INGEST_KINDS
from rohde.core.errors import RohdeError

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
    if args.role == "outlet":
        from rohde.bench.outlets import run_outlets

        run_outlets(name=args.name, source_ids=args.source_ids.split(","), n_channels=args.n_channels,
                    fs_hz=args.fs_hz, chunk_ms=args.chunk_ms, ready_file=Path(args.ready_file),
                    log_file=Path(args.log_file), seed=args.seed)
    else:
        from rohde.bench.ingestion import run_ingest_consumer

        run_ingest_consumer(kind=args.kind, name=args.name, source_id=args.source_id, seconds=args.seconds,
                            warmup_s=args.warmup_s, model=Path(args.model), result_file=Path(args.result_file),
                            pull_interval_ms=args.pull_interval_ms, quality_interval_s=args.quality_interval_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
