"""`rohde bench`: its flags and handler; the measuring modules load inside the handler."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from rohde.bench.config import INGEST_KINDS, REPO_ROOT, SECTIONS, BenchConfig
from rohde.core.errors import ConfigError

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    p = subparsers.add_parser("bench", help="measure latency, capacity, inference and ingestion cost; write bench/")
    p.add_argument("--model", help="model package folder (default models/rohde-default, else a random-weight CNN)")
    p.add_argument("--out", default=str(REPO_ROOT / "bench"), help="folder for results.json and RESULTS.md")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--latency-streams", default="1,8,32", help="stream counts with a latency table (default 1,8,32)")
    p.add_argument("--capacity-probes", type=int, default=2,
                   help="further stream counts tried for capacity, bisecting pass and failure (default 2)")
    p.add_argument("--step-s", type=float, default=25.0, help="measured seconds per stream count (default 25)")
    p.add_argument("--soak-s", type=float, default=600.0, help="memory soak seconds (default 600)")
    p.add_argument("--soak-streams", type=int, default=8, help="streams during the soak (default 8)")
    p.add_argument("--ingest-s", type=float, default=20.0, help="measured seconds per ingestion reader (default 20)")
    p.add_argument("--ingest-kinds", default=",".join(INGEST_KINDS),
                   help=f"ingestion readers to compare (default {','.join(INGEST_KINDS)})")
    p.add_argument("--chunk-ms", type=float, default=10.0, help="outlet push interval (default 10)")
    p.add_argument("--inference-s", type=float, default=2.0, help="seconds timing each inference cell (default 2)")
    p.add_argument("--gpu", action="store_true", help="CUDA provider (IO binding) for inference and the server")
    p.add_argument("--pull-interval-ms", type=float, help="server pull interval for latency runs (default: server's)")
    p.add_argument("--quality-interval-s", type=float,
                   help="server quality-estimate interval for latency runs (default: server's)")
    p.add_argument("--replicas", type=int, default=1,
                   help="latency and soak: deal the streams by source_id over this many servers on this machine "
                        "(default 1; docs/scale_out.md)")
    p.add_argument("--label", default="", help="key of this run in results.json (default cpu or gpu)")
    p.add_argument("--merge", action="store_true",
                   help="replace only the measured sections of the stored run with this label (re-measure one part)")
    p.add_argument("--compare-to", default="",
                   help="label of the stored run that RESULTS.md shows side by side with this one (default cpu; "
                        "none: no comparison)")
    p.add_argument("--quick", action="store_true", help="a tiny smoke configuration (seconds, not minutes)")
    p.set_defaults(handler=run_bench_command)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    config = BenchConfig(
        model=Path(args.model).resolve() if args.model else None, out_dir=Path(args.out),
        sections=tuple(s.strip() for s in args.sections.split(",") if s.strip()),
        latency_streams=_ints(args.latency_streams), capacity_probes=args.capacity_probes,
        step_s=args.step_s, soak_s=args.soak_s, soak_streams=args.soak_streams, ingest_s=args.ingest_s,
        ingest_kinds=tuple(k.strip() for k in args.ingest_kinds.split(",") if k.strip()),
        chunk_ms=args.chunk_ms, inference_s=args.inference_s, gpu=args.gpu, label=args.label, merge=args.merge,
        compare_to=args.compare_to,
        pull_interval_ms=args.pull_interval_ms, quality_interval_s=args.quality_interval_s, replicas=args.replicas,
        command=_command_line(),
    )
    if args.quick:
        config = replace(config, latency_streams=(1,), capacity_probes=0, step_s=3.0, warmup_s=1.0, soak_s=4.0,
                         soak_streams=2, ingest_s=2.0, batch_sizes=(1, 4), inference_s=0.2)
    return config


def run_bench_command(args: argparse.Namespace) -> int:
    from rohde.bench.runner import run_bench

    logging.getLogger("httpx").setLevel(logging.WARNING)
    results = run_bench(config_from_args(args))
    lat = results.get("latency")
    if lat:
        logger.info("Capacity: %d streams.", lat["capacity_streams"])
    logger.info("Wrote %s/results.json and RESULTS.md.", args.out)
    return 0


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ConfigError(f"Expected comma-separated integers, got {text!r}.") from exc


def _command_line() -> str:
    """The command as typed: `rohde ...`, or `python -m rohde.bench ...` for the module entry point."""
    argv0 = Path(sys.argv[0])
    head = "python -m rohde.bench" if (argv0.name, argv0.parent.name) == ("__main__.py", "bench") else "rohde"
    return " ".join([head, *sys.argv[1:]])
