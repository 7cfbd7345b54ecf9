"""`python -m rohde.reliability`: the internal role `outlet` (a fault-injecting outlet, a child of
`rohde reliability`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rohde.reliability")
    sub = parser.add_subparsers(dest="role", required=True)
    o = sub.add_parser("outlet", help="a noise outlet injecting one fault (a child of rohde reliability)")
    o.add_argument("--name", required=True)
    o.add_argument("--source-id", required=True)
    o.add_argument("--n-channels", type=int, required=True)
    o.add_argument("--fs-hz", type=float, required=True)
    o.add_argument("--chunk-ms", type=float, required=True)
    o.add_argument("--ready-file", required=True)
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--fault", default="{}", help="the FaultSpec as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from rohde.reliability.fault_outlet import FaultSpec, run_fault_outlet

    run_fault_outlet(name=args.name, source_id=args.source_id, n_channels=args.n_channels, fs_hz=args.fs_hz,
                     chunk_ms=args.chunk_ms, ready_file=Path(args.ready_file),
                     fault=FaultSpec(**json.loads(args.fault)), seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
